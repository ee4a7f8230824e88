"""Check 27's front ends: the exact-inference (LCA fixed point) coder against the orthonormal
closed form and its gradient against the explicit active-set formula (docs/theory.md A.3); the
regime guard names the broken set-up."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import ortho_group

from sparsecnn.inference import sparse_code
from sparsecnn.studies.paper1_robustness.check27 import (
    UNFOOLED_MARGIN,
    CentredCoder,
    front_end_problem,
    minimum_over_attacks,
    square_minimal_l2,
    unfooled_problem,
)


@pytest.mark.parametrize("lam", [0.1, 0.5])
def test_exact_coder_equals_relu_coder_for_an_orthonormal_dictionary(lam: float) -> None:
    # D^T D = I: argmin_{a >= 0} 1/2 ||x - D a||^2 + lam sum a = ReLU(D^T x - lam), and both
    # front ends must then agree in value and in input gradient
    dictionary = torch.from_numpy(ortho_group.rvs(9, random_state=0))
    mean = torch.from_numpy(np.random.default_rng(1).uniform(size=9))
    x = torch.from_numpy(np.random.default_rng(2).normal(size=(6, 1, 3, 3)))
    weights = torch.from_numpy(np.random.default_rng(3).normal(size=(6, 9)))
    values, gradients = [], []
    for exact in (False, True):
        inputs = x.clone().requires_grad_(True)
        codes = CentredCoder(dictionary, mean, lam, exact)(inputs)
        (codes * weights).sum().backward()
        values.append(codes.detach())
        gradients.append(inputs.grad)
    torch.testing.assert_close(values[1], values[0], rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(gradients[1], gradients[0], rtol=1e-9, atol=1e-10)
    assert 0 < float((values[0] == 0).double().mean()) < 1  # both branches of the ReLU used


def test_exact_coder_gradient_is_the_active_set_formula() -> None:
    rng = np.random.default_rng(4)
    dictionary = torch.from_numpy(rng.normal(size=(8, 20)))
    dictionary = dictionary / dictionary.norm(dim=0)
    x = torch.from_numpy(rng.normal(size=(3, 8))).requires_grad_(True)
    weights = torch.from_numpy(rng.normal(size=(3, 20)))
    lam = 0.3
    codes = CentredCoder(dictionary, torch.zeros(8, dtype=torch.float64), lam, True)(x)
    reference = sparse_code(x.detach(), dictionary, lam, method="fista", nonneg=True,
                            max_iter=20000, tol=1e-12).codes
    torch.testing.assert_close(codes.detach(), reference, rtol=1e-6, atol=1e-8)
    (codes * weights).sum().backward()
    for row in range(3):
        active = torch.nonzero(codes[row] > 0).flatten()
        sub = dictionary[:, active]
        expected = sub @ torch.linalg.solve(sub.T @ sub, weights[row, active])
        torch.testing.assert_close(x.grad[row], expected, rtol=1e-8, atol=1e-10)


def test_regime_guard_names_the_broken_set_up() -> None:
    good = {"sparse_range": [0.5, 0.95], "relu_front_end": {"zero_fraction": 0.7},
            "lca_front_end": {"zero_fraction": 0.9},
            "dictionary_learning": {"converged": True, "relative_change_last_50": 0.01},
            "lca": {"converged": True, "tolerance": 1e-4}}
    assert front_end_problem([good]) == ""
    linear = {**good, "relu_front_end": {"zero_fraction": 0.0}}
    assert "relu_front_end zero fraction 0.000 outside [0.5, 0.95]" in front_end_problem(
        [good, linear])
    assert "seed 1" in front_end_problem([good, linear])
    unconverged = {**good, "dictionary_learning": {"converged": False,
                                                   "relative_change_last_50": 0.2}}
    assert "dictionary learning not converged" in front_end_problem([unconverged])


# -- C9's rule: minimum over attacks, gradient-free search, unfooled fractions ----------------

def test_minimum_over_attacks_is_the_per_image_minimum_with_inf_as_unfooled() -> None:
    pgd = torch.tensor([1.0, math.inf, 2.0, math.inf])
    square = torch.tensor([1.5, 0.7, math.inf, math.inf])
    combined = minimum_over_attacks({"pgd_l2": pgd, "square": square})
    torch.testing.assert_close(combined, torch.tensor([1.0, 0.7, 2.0, math.inf],
                                                      dtype=torch.float64))
    with pytest.raises(ValueError, match="distances"):
        minimum_over_attacks({})
    with pytest.raises(ValueError, match="NaN"):
        minimum_over_attacks({"pgd_l2": torch.tensor([math.nan])})


class _Linear(torch.nn.Module):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.weight, self.bias = weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T + self.bias


def test_square_minimal_l2_brackets_the_closed_form_of_a_linear_classifier() -> None:
    # logits W x + b, target t (the runner-up class): the smallest L-inf radius that reaches t is
    # r* = (f_y - f_t) / ||w_y - w_t||_1 (attained at the vertex x - r* sign(w_y - w_t), far from
    # the pixel bounds here), so a vertex search bisected to width top / 2^B returns an L2 norm
    # in [r* sqrt(d), (r* + top / 2^B) sqrt(d)]; an image whose r* sqrt(d) exceeds max_epsilon
    # is unfooled (inf)
    rng = np.random.default_rng(5)
    weight = torch.from_numpy(rng.normal(size=(3, 4)))
    bias = torch.from_numpy(rng.normal(scale=0.3, size=3))
    images = torch.from_numpy(rng.uniform(0.35, 0.65, size=(8, 1, 2, 2)))
    model = _Linear(weight, bias)
    logits = model(images)
    labels, targets = logits.argsort(1, descending=True)[:, :2].T
    gap = logits.gather(1, labels[:, None])[:, 0] - logits.gather(1, targets[:, None])[:, 0]
    radius = gap / (weight[labels] - weight[targets]).abs().sum(1)
    # the search range splits the images (radii below 0.3 stay inside the pixel bounds)
    max_epsilon, bisections = float(2.0 * radius.sort().values[len(radius) // 2 - 1] + 1e-3), 10
    assert float(max_epsilon) / 2.0 < 0.3
    distance = square_minimal_l2(model, images, labels, targets, max_epsilon, seed=0,
                                 queries=200, bisections=bisections)
    top = max_epsilon / 2.0
    reachable = radius * 2.0 <= max_epsilon
    assert reachable.any() and (~reachable).any()  # both branches exercised
    found = distance[reachable]
    assert bool((found >= radius[reachable] * 2.0 - 1e-9).all())
    assert bool((found <= (radius[reachable] + top / 2 ** bisections) * 2.0 + 1e-9).all())
    assert bool(torch.isinf(distance[~reachable & (radius * 2.0 > max_epsilon * 1.01)]).all())


@pytest.mark.parametrize(("lca", "relu", "flagged"), [(0.175, 0.0, True), (0.05, 0.0, False),
                                                      (0.3, 0.25, False)])
def test_unfooled_fractions_that_differ_beyond_the_margin_make_c9_unjudgeable(
        lca: float, relu: float, flagged: bool) -> None:
    front = [{"lca_front_end": {"unfooled_fraction": lca},
              "relu_front_end": {"unfooled_fraction": relu}}]
    problem = unfooled_problem(front)
    assert bool(problem) == flagged == (abs(lca - relu) > UNFOOLED_MARGIN)
    if flagged:
        assert f"{lca:.3f}" in problem and "unfooled" in problem
