"""Attacks: exact projections, epsilon balls, closed-form worst cases of linear classifiers."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from sparsecnn.robustness import (
    attack_curve,
    evaluate_robustness,
    fgsm,
    minimal_l2_perturbation,
    pgd,
    project_l2,
    project_linf,
    random_targets,
)


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3)).double()


def _batch(seed: int = 0, n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, 4, 4, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 3, (n,), generator=generator)
    return images, labels


def _linear_binary(seed: int, n_features: int = 16) -> nn.Linear:
    generator = torch.Generator().manual_seed(seed)
    layer = nn.Linear(n_features, 2).double()
    with torch.no_grad():
        layer.weight.copy_(torch.randn(2, n_features, generator=generator,
                                       dtype=torch.float64) * 0.3)
        layer.bias.copy_(torch.randn(2, generator=generator, dtype=torch.float64) * 0.1)
    return layer


# -- projections ---------------------------------------------------------------------------------

@given(seed=st.integers(0, 2**31 - 1), epsilon=st.floats(0.01, 3.0))
def test_l2_projection_satisfies_the_projection_inequality(seed: int, epsilon: float) -> None:
    # p = P(v) iff p is in the ball and <v - p, d - p> <= 0 for every d in the ball
    generator = torch.Generator().manual_seed(seed)
    delta = torch.randn(5, 1, 3, 3, generator=generator, dtype=torch.float64) * 2
    projected = project_l2(delta, epsilon)
    norms = torch.linalg.vector_norm(projected.flatten(1), dim=1)
    assert bool((norms <= epsilon * (1 + 1e-12)).all())
    others = torch.randn(200, 9, generator=generator, dtype=torch.float64)
    radii = torch.rand(200, 1, generator=generator, dtype=torch.float64) * epsilon
    others = others / torch.linalg.vector_norm(others, dim=1, keepdim=True) * radii
    for v, p in zip(delta.flatten(1), projected.flatten(1), strict=True):
        assert float(((others - p) @ (v - p)).max()) <= 1e-10
        if float(torch.linalg.vector_norm(v)) <= epsilon:
            assert torch.equal(v, p)


@given(seed=st.integers(0, 2**31 - 1), epsilon=st.floats(0.01, 3.0))
def test_linf_projection_satisfies_the_projection_inequality(seed: int, epsilon: float) -> None:
    generator = torch.Generator().manual_seed(seed)
    delta = torch.randn(5, 1, 3, 3, generator=generator, dtype=torch.float64) * 2
    projected = project_linf(delta, epsilon)
    assert float(projected.abs().max()) <= epsilon
    others = (torch.rand(200, 9, generator=generator, dtype=torch.float64) * 2 - 1) * epsilon
    for v, p in zip(delta.flatten(1), projected.flatten(1), strict=True):
        assert float(((others - p) @ (v - p)).max()) <= 1e-10
    inside = delta.abs() <= epsilon
    assert torch.equal(projected[inside], delta[inside])


def test_per_sample_radii_project_each_sample_onto_its_own_ball() -> None:
    delta = torch.ones(3, 4, dtype=torch.float64)
    radii = torch.tensor([0.5, 1.0, 4.0], dtype=torch.float64)
    torch.testing.assert_close(torch.linalg.vector_norm(project_l2(delta, radii), dim=1),
                               torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64))


# -- epsilon balls -------------------------------------------------------------------------------

@pytest.mark.parametrize("epsilon", [0.0, 0.03, 0.2])
def test_fgsm_stays_in_the_linf_ball_and_the_pixel_range(epsilon: float) -> None:
    images, labels = _batch()
    adversarial = fgsm(_mlp(), images, labels, epsilon)
    assert float((adversarial - images).abs().max()) <= epsilon + 1e-15
    assert float(adversarial.min()) >= 0.0 and float(adversarial.max()) <= 1.0


@pytest.mark.parametrize(("norm", "epsilon"), [("linf", 0.05), ("linf", 0.3), ("l2", 0.2),
                                               ("l2", 1.5)])
@pytest.mark.parametrize("random_start", [False, True])
def test_pgd_stays_in_its_ball_and_the_pixel_range(norm: str, epsilon: float,
                                                   random_start: bool) -> None:
    images, labels = _batch(1)
    model = _mlp(1)
    adversarial = pgd(model, images, labels, epsilon, norm=norm, steps=7,
                      random_start=random_start, seed=3)
    delta = (adversarial - images).flatten(1)
    size = delta.abs().max(1).values if norm == "linf" else torch.linalg.vector_norm(delta,
                                                                                     dim=1)
    assert bool((size <= epsilon * (1 + 1e-12)).all())
    assert float(adversarial.min()) >= 0.0 and float(adversarial.max()) <= 1.0
    # the attack lowers the accuracy (or leaves it) relative to the clean images
    with torch.no_grad():
        clean = (model(images).argmax(1) == labels).sum()
        attacked = (model(adversarial).argmax(1) == labels).sum()
    assert int(attacked) <= int(clean)


# -- closed forms for linear classifiers ---------------------------------------------------------

def _margin(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = model(inputs)
    return logits.gather(1, labels[:, None])[:, 0] - logits.gather(1, 1 - labels[:, None])[:, 0]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("attack", ["fgsm", "pgd_linf"])
def test_linf_attack_on_a_linear_classifier_reaches_the_closed_form_worst_case(
        seed: int, attack: str) -> None:
    # for logits W x + b the worst L-inf perturbation of the margin (w_y - w_o)^T x is
    # -eps sign(w_y - w_o): the margin drops by exactly eps ||w_y - w_o||_1
    model = _linear_binary(seed)
    generator = torch.Generator().manual_seed(seed + 10)
    x = torch.randn(20, 16, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 2, (20,), generator=generator)
    epsilon = 0.07
    if attack == "fgsm":
        adversarial = fgsm(model, x, labels, epsilon, bounds=None)
    else:
        adversarial = pgd(model, x, labels, epsilon, norm="linf", steps=10, bounds=None)
    difference = (model.weight[0] - model.weight[1]).detach().abs().sum()
    with torch.no_grad():
        drop = _margin(model, x, labels) - _margin(model, adversarial, labels)
    torch.testing.assert_close(drop, torch.full_like(drop, epsilon * float(difference)),
                               atol=1e-12, rtol=1e-12)


def test_l2_pgd_on_a_linear_classifier_moves_the_margin_by_eps_times_the_l2_norm() -> None:
    model = _linear_binary(5)
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(20, 16, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 2, (20,), generator=generator)
    adversarial = pgd(model, x, labels, 0.4, norm="l2", steps=10, bounds=None)
    difference = torch.linalg.vector_norm((model.weight[0] - model.weight[1]).detach())
    with torch.no_grad():
        drop = _margin(model, x, labels) - _margin(model, adversarial, labels)
    torch.testing.assert_close(drop, torch.full_like(drop, 0.4 * float(difference)),
                               atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("seed", [0, 3])
def test_minimal_l2_perturbation_of_a_linear_classifier_is_the_distance_to_the_boundary(
        seed: int) -> None:
    model = _linear_binary(seed)
    generator = torch.Generator().manual_seed(seed + 20)
    x = torch.randn(30, 16, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        labels = model(x).argmax(1)  # correctly classified: the distance is positive
    w = (model.weight[1] - model.weight[0]).detach()
    c = float((model.bias[1] - model.bias[0]).detach())
    expected = (x @ w + c).abs() / torch.linalg.vector_norm(w)
    tolerance = 1e-4
    result = minimal_l2_perturbation(model, x, labels, max_epsilon=8.0, tolerance=tolerance,
                                     bounds=None)
    assert bool(result.success.all())
    gap = result.distance - expected
    assert float(gap.min()) >= -1e-9 and float(gap.max()) <= tolerance
    assert abs(result.median - float(expected.sort().values[(len(expected) - 1) // 2])) \
        <= tolerance
    with torch.no_grad():
        assert bool((model(result.adversarial).argmax(1) != labels).all())


def test_minimal_perturbation_is_zero_for_misclassified_and_inf_beyond_max_epsilon() -> None:
    model = _linear_binary(1)
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(10, 16, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        predictions = model(x).argmax(1)
    labels = predictions.clone()
    labels[:3] = 1 - predictions[:3]
    result = minimal_l2_perturbation(model, x, labels, max_epsilon=1e-6, tolerance=1e-7,
                                     bounds=None)
    assert torch.equal(result.distance[:3], torch.zeros(3, dtype=torch.float64))
    assert bool(torch.isinf(result.distance[3:]).all())
    assert not bool(result.success[3:].any())


def test_targeted_attack_reaches_the_target_and_random_targets_differ_from_labels() -> None:
    images, labels = _batch(2, n=40)
    model = _mlp(2)
    with torch.no_grad():
        labels = model(images).argmax(1)
    targets = random_targets(labels, 3, seed=1)
    assert bool((targets != labels).all())
    assert torch.equal(targets, random_targets(labels, 3, seed=1))
    result = minimal_l2_perturbation(model, images, labels, targets=targets, max_epsilon=20.0,
                                     tolerance=1e-2, bounds=None)
    reached = result.success
    with torch.no_grad():
        predicted = model(result.adversarial[reached]).argmax(1)
    assert torch.equal(predicted, targets[reached])
    assert int(reached.sum()) >= 30


def test_attack_curve_and_evaluate_robustness_are_consistent() -> None:
    images, labels = _batch(3, n=20)
    model = _mlp(3)
    curve = attack_curve(model, images, labels, "pgd_linf", [0.0, 0.1, 0.5], steps=5)
    assert curve[0] == float((model(images).argmax(1) == labels).double().mean())
    report = evaluate_robustness(model, images, labels, epsilons_linf=(0.0, 0.1),
                                 epsilons_l2=(0.0, 0.5), pgd_steps=5, minimal_subset=5)
    assert report["clean_accuracy"] == curve[0]
    assert report["attacks"]["fgsm"]["accuracy"][0] == curve[0]
    assert set(report["corruptions"]["accuracy"]) == {"gaussian_noise", "salt_and_pepper",
                                                      "blur", "contrast", "occlusion"}


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda m, x, y: fgsm(m, x, y, -0.1), ValueError,
     r"epsilon must be a finite number >= 0; got -0\.1"),
    (lambda m, x, y: pgd(m, x, y, 0.1, norm="l1"), ValueError,
     r"norm must be one of 'linf', 'l2'; got 'l1'"),
    (lambda m, x, y: pgd(m, x, y, 0.1, steps=0), ValueError,
     r"steps must be an integer >= 1; got 0"),
    (lambda m, x, y: fgsm(m, x, y[:-1], 0.1), ValueError,
     r"labels must have one entry per image \(n = 24\); got 23"),
    (lambda m, x, y: fgsm(m, x, y.double(), 0.1), TypeError,
     r"labels must be an int64 tensor of shape \(n,\)"),
    (lambda m, x, y: minimal_l2_perturbation(m, x, y, max_epsilon=0), ValueError,
     r"max_epsilon must be a finite number > 0; got 0"),
    (lambda m, x, y: pgd(m, x, y, torch.ones(3)), ValueError,
     r"epsilon must be a number or one value per sample \(24\)"),
    (lambda m, x, y: attack_curve(m, x, y, "cw", [0.1]), ValueError,
     r"attack must be one of 'fgsm', 'pgd_linf', 'pgd_l2'; got 'cw'"),
])
def test_bad_attack_input(call, error: type, message: str) -> None:
    images, labels = _batch()
    with pytest.raises(error, match=message):
        call(_mlp(), images, labels)
