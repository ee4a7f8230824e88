"""Gradient-free attacks against the closed-form worst case of linear classifiers.

For logits ``W x + b`` with two classes the margin of class y is ``m(x) = v^T x + c`` with
``v = w_y - w_o``, ``c = b_y - b_o``; over ``||delta||_inf <= eps`` (no pixel bounds) its minimum
is ``m(x) - eps ||v||_1``, reached at the vertex ``x - eps sign(v)``.  No attack can go below it.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sparsecnn.robustness import pgd
from sparsecnn.robustness.attacks import pgd_restarts
from sparsecnn.robustness.gradient_free import margins, random_noise_attack, square_attack_linf


def _linear(seed: int, n_features: int = 16) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    layer = nn.Linear(n_features, 2).double()
    with torch.no_grad():
        layer.weight.copy_(torch.randn(2, n_features, generator=generator, dtype=torch.float64))
        layer.bias.copy_(torch.randn(2, generator=generator, dtype=torch.float64))
    return nn.Sequential(nn.Flatten(), layer)


def _closed_form(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 epsilon: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean margins and their minimum over the L-inf ball (no pixel bounds)."""
    layer = model[1]
    weight, bias = layer.weight.detach(), layer.bias.detach()
    other = 1 - labels
    v = weight[labels] - weight[other]
    c = bias[labels] - bias[other]
    clean = (v * images.flatten(1)).sum(1) + c
    return clean, clean - epsilon * v.abs().sum(1)


def _batch(seed: int, n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, 4, 4, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 2, (n,), generator=generator)
    return images, labels


def test_margins_are_true_logit_minus_best_other_and_ties_count_as_fooled() -> None:
    model = nn.Identity()
    logits = torch.tensor([[3.0, 1.0, 2.0], [1.0, 1.0, 0.0]]).view(2, 3)
    assert margins(model, logits, torch.tensor([0, 1])).tolist() == [1.0, 0.0]
    flat = nn.Sequential(nn.Flatten(), nn.Linear(1, 2, bias=False)).double()
    with torch.no_grad():
        flat[1].weight.zero_()  # constant logits: every image is a tie
    result = square_attack_linf(flat, torch.zeros(3, 1, 1, 1, dtype=torch.float64),
                                torch.tensor([0, 1, 0]), 0.1, queries=5)
    assert result.fooled.all() and result.queries.tolist() == [1, 1, 1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_square_attack_reaches_the_linear_worst_case(seed: int) -> None:
    """Images the closed form says can be fooled are fooled; the others end at the exact
    minimum margin m(x) - eps ||v||_1 (the attack found the optimal vertex)."""
    model = _linear(seed)
    images, labels = _batch(seed)
    epsilon = 0.15
    clean, worst = _closed_form(model, images, labels, epsilon)
    result = square_attack_linf(model, images, labels, epsilon, queries=400, seed=seed,
                                bounds=None)
    decided = worst.abs() > 1e-9
    assert torch.equal(result.fooled[decided], (worst <= 0)[decided])
    unfooled = (worst > 0) & (clean > 0)
    assert unfooled.any()
    assert torch.allclose(result.margin[unfooled], worst[unfooled], atol=1e-9)
    assert (result.adversarial - images).abs().amax() <= epsilon + 1e-15


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), epsilon=st.floats(0.0, 0.6),
       queries=st.integers(1, 40))
def test_gradient_free_attacks_stay_in_the_ball_and_never_beat_the_optimum(
        seed: int, epsilon: float, queries: int) -> None:
    model = _linear(seed)
    images, labels = _batch(seed, n=8)
    _, worst_unbounded = _closed_form(model, images, labels, epsilon)
    for result in (square_attack_linf(model, images, labels, epsilon, queries=queries,
                                      seed=seed),
                   random_noise_attack(model, images, labels, epsilon, samples=queries,
                                       seed=seed)):
        delta = result.adversarial - images
        assert float(delta.abs().max()) <= epsilon + 1e-12
        assert float(result.adversarial.min()) >= 0.0 and float(result.adversarial.max()) <= 1
        # the box [0, 1] only shrinks the feasible set: the margin stays above the ball's optimum
        assert bool((result.margin >= worst_unbounded - 1e-9).all())
        assert torch.allclose(result.margin, margins(model, result.adversarial, labels))


def test_random_noise_attack_is_weaker_than_the_square_attack_on_a_linear_model() -> None:
    """A random vertex reaches the optimum only by chance (2^-16 per draw here)."""
    model = _linear(4)
    images, labels = _batch(4)
    epsilon = 0.15
    noise = random_noise_attack(model, images, labels, epsilon, samples=20, seed=0,
                                bounds=None)
    square = square_attack_linf(model, images, labels, epsilon, queries=400, seed=0,
                                bounds=None)
    assert int(square.fooled.sum()) > int(noise.fooled.sum())


def test_pgd_restarts_is_never_weaker_than_one_pgd_run_and_stays_in_the_ball() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3)).double()
    images, _ = _batch(5, n=30)
    labels = torch.randint(0, 3, (30,), generator=torch.Generator().manual_seed(1))
    epsilon = 0.1
    single = pgd(model, images, labels, epsilon, steps=10)
    several = pgd_restarts(model, images, labels, epsilon, steps=10, restarts=3, seed=2)
    fooled_single = margins(model, single, labels) <= 0
    fooled_several = margins(model, several, labels) <= 0
    assert bool((fooled_several | ~fooled_single).all())  # fooled by one run -> still fooled
    assert float((several - images).abs().max()) <= epsilon + 1e-12


@pytest.mark.parametrize(("call", "message"), [
    (lambda m, x, y: square_attack_linf(m, x, y, -0.1), "epsilon"),
    (lambda m, x, y: square_attack_linf(m, x, y, 0.1, queries=0), "queries"),
    (lambda m, x, y: square_attack_linf(m, x, y, 0.1, p_init=1.5), "p_init"),
    (lambda m, x, y: random_noise_attack(m, x, y, 0.1, samples=0), "samples"),
    (lambda m, x, y: random_noise_attack(m, x, y, 0.1, seed=-1), "seed"),
    (lambda m, x, y: pgd_restarts(m, x, y, 0.1, restarts=-1), "restarts"),
    (lambda m, x, y: square_attack_linf(m, x, y[:2], 0.1), "labels"),
])
def test_bad_gradient_free_input(call, message: str) -> None:
    model = _linear(0)
    images, labels = _batch(0, n=4)
    with pytest.raises(ValueError, match=message):
        call(model, images, labels)
