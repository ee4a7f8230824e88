"""The gradient-masking check and the BPDA surrogate of the constructed network.

Exact statements used: the constructed detector is constant off its ramp and no score lies in
the ramp under B.1 (docs/theory.md B.3), so the input gradient is exactly 0; for a linear
classifier on the box [0, 1] the worst case in the L-inf ball is the clipped vertex
``clip(x - eps sign(v), 0, 1)`` (coordinate-wise optimal), so PGD's accuracy has a closed form.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsecnn.features import construct, preset
from sparsecnn.robustness.gradient_free import margins
from sparsecnn.robustness.masking import CHECKS, gradient_masking_report
from sparsecnn.robustness.surrogate import SmoothReluSurrogate, SurrogateGradientNetwork

EPSILONS = (0.05, 0.1, 0.2)


@pytest.fixture(scope="module")
def world_sample():
    world = preset("default")
    return world, world.sample(12, seed=3)


def _linear() -> nn.Module:
    generator = torch.Generator().manual_seed(0)
    layer = nn.Linear(16, 2).double()
    with torch.no_grad():
        layer.weight.copy_(torch.randn(2, 16, generator=generator, dtype=torch.float64))
        layer.bias.zero_()
    return nn.Sequential(nn.Flatten(), layer)


def test_linear_classifier_passes_every_check_and_pgd_matches_the_closed_form() -> None:
    model = _linear()
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(40, 1, 4, 4, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        labels = model(images).argmax(1)  # all correct: the flips are the attack's
    report = gradient_masking_report(model, images, labels, EPSILONS, steps=50, restarts=1,
                                     square_queries=50, seed=0)
    assert report.passed, report.reasons
    assert set(report.checks) == set(CHECKS)
    weight = model[1].weight.detach()
    v = weight[labels] - weight[1 - labels]
    for epsilon, accuracy in zip(EPSILONS, report.pgd_accuracy, strict=True):
        worst = (images.flatten(1) - epsilon * torch.sign(v)).clamp(0, 1)
        expected = float(((v * worst).sum(1) > 0).double().mean())
        assert accuracy == pytest.approx(expected, abs=1e-12)
    assert report.zero_gradient_fraction == 0.0
    assert all(s == pytest.approx(1.0) for s in report.pgd_mean_linf_over_eps)


def test_constructed_network_has_zero_gradient_and_fails_the_check(world_sample) -> None:
    world, sample = world_sample
    # a zero gradient stops PGD at its first step whatever the number of steps: 5 suffice
    report = gradient_masking_report(construct(world), sample.images, sample.labels,
                                     (0.05, 0.1), steps=5, restarts=0, square_queries=5)
    assert report.zero_gradient_fraction == 1.0
    assert report.unbounded_pgd_max_linf == 0.0
    assert report.pgd_accuracy == [1.0, 1.0]  # the artefact: PGD never moved
    assert not report.passed
    assert {"gradient", "budget", "monotone", "unbounded"} <= {
        name for name, passed in report.checks.items() if not passed}
    assert any(reason.startswith("gradient: 1 of the inputs") for reason in report.reasons)


def test_bpda_surrogate_keeps_the_outputs_and_restores_the_gradient(world_sample) -> None:
    world, sample = world_sample
    network = construct(world)
    surrogate = SurrogateGradientNetwork(network)
    images = sample.images.double().requires_grad_(True)
    assert torch.equal(surrogate(images), network(images))
    loss = nn.functional.cross_entropy(surrogate(images), sample.labels)
    (gradient,) = torch.autograd.grad(loss, images)
    assert bool((gradient.flatten(1).abs().amax(1) > 0).all())
    # at eps 0.1 (beyond the structured attack's breaking size) BPDA PGD changes every label
    report = gradient_masking_report(surrogate, sample.images, sample.labels, (0.1,),
                                     steps=20, restarts=0, square_queries=5)
    assert report.pgd_accuracy == [0.0]
    assert bool((margins(network, sample.images, sample.labels) > 0).all())


def test_surrogate_rejects_other_networks() -> None:
    with pytest.raises(TypeError, match="network must be a ConstructedNetwork"):
        SurrogateGradientNetwork(nn.Linear(2, 2))
    network = construct(preset("default"))
    network.detector = nn.Sequential(nn.Conv2d(1, 6, 3))  # not Conv2d -> ReLU -> Conv2d
    with pytest.raises(ValueError, match="binary-template detector"):
        SurrogateGradientNetwork(network)


@pytest.mark.parametrize(("epsilons", "options", "message"), [
    ((0.1, 0.05), {}, "epsilons must be a non-empty, strictly increasing"),
    ((), {}, "epsilons must be a non-empty"),
    ((0.1,), {"steps": 0}, "steps"),
    ((0.1,), {"restarts": -1}, "restarts"),
    ((0.1,), {"tolerance": -0.1}, "tolerance"),
])
def test_bad_masking_input(epsilons, options, message: str) -> None:
    images = torch.rand(3, 1, 4, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match=message):
        gradient_masking_report(_linear(), images, torch.tensor([0, 1, 0]), epsilons,
                                **options)


def test_smooth_relu_surrogate_keeps_outputs_and_opens_dead_paths() -> None:
    """A class predicted when its ReLU unit is off (logit = bias): the exact gradient is 0,
    the surrogate's is not, and PGD on it changes that label; outputs are unchanged."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 1), nn.ReLU(), nn.Linear(1, 2)).double()
    with torch.no_grad():
        model[1].weight.fill_(1.0)
        model[1].bias.fill_(-3.0)        # unit on iff sum(x) > 3
        model[3].weight.copy_(torch.tensor([[0.0], [4.0]], dtype=torch.float64))
        model[3].bias.copy_(torch.tensor([1.0, 0.0], dtype=torch.float64))
    images = torch.full((5, 1, 2, 2), 0.5, dtype=torch.float64)  # sum 2: unit off, class 0
    labels = torch.zeros(5, dtype=torch.int64)
    surrogate = SmoothReluSurrogate(model)
    assert torch.equal(surrogate(images), model(images))
    exact = gradient_masking_report(model, images, labels, (0.3, 0.5), steps=10, restarts=0,
                                    square_queries=5)
    smooth = gradient_masking_report(surrogate, images, labels, (0.3, 0.5), steps=10,
                                     restarts=0, square_queries=5)
    assert exact.zero_gradient_fraction == 1.0 and not exact.checks["gradient"]
    assert smooth.zero_gradient_fraction == 0.0
    # eps 0.3: sum <= 3.2, logit_1 = 4 * 0.2 = 0.8 < 1 (still class 0); eps 0.5: 4 * 1 > 1
    assert smooth.pgd_accuracy == [1.0, 0.0]
    with pytest.raises(ValueError, match=r"no nn\.ReLU"):
        SmoothReluSurrogate(nn.Linear(2, 2))
