"""Check 27's front ends: the exact-inference (LCA fixed point) coder against the orthonormal
closed form and its gradient against the explicit active-set formula (docs/theory.md A.3); the
regime guard names the broken set-up."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import ortho_group

from sparsecnn.inference import sparse_code
from sparsecnn.studies.paper1_robustness.check27 import CentredCoder, front_end_problem


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
