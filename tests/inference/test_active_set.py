"""The dense fast path (screening + shrinking FISTA) against scikit-learn and the plain solver."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import random_batch_problem, sklearn_lasso_codes

import sparsecnn as sc
from sparsecnn.inference.active_set import (
    shrinking_fista,
    uses_fast_dense_path,
    zero_is_optimal,
)
from sparsecnn.inference.problem import SparseCodingProblem


def _problem(seed: int, n_signals: int = 40, n_features: int = 16, n_atoms: int = 48):
    return random_batch_problem(seed, n_signals, n_features, n_atoms, zero_fraction=0.25)


@pytest.mark.parametrize("nonneg", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fast_path_matches_sklearn_lasso(nonneg: bool, dtype: torch.dtype) -> None:
    x, D = _problem(0)
    lam = 0.3
    reference = sklearn_lasso_codes(x, D, lam, nonneg)
    tol = 1e-10 if dtype == torch.float64 else 1e-6
    result = sc.sparse_code(torch.tensor(x, dtype=dtype), torch.tensor(D, dtype=dtype), lam,
                            method="fista", nonneg=nonneg, tol=tol, max_iter=50_000)
    assert result.converged
    atol = 1e-7 if dtype == torch.float64 else 2e-4
    np.testing.assert_allclose(result.codes.double().numpy(), reference, atol=atol)
    assert bool((result.codes[: len(x) // 4] == 0).all())


@pytest.mark.parametrize("nonneg", [False, True])
@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")
@pytest.mark.parametrize("lam_kind", ["scalar", "per_atom", "per_coefficient"])
def test_fast_path_equals_plain_differentiable_solver(nonneg: bool, lam_kind: str) -> None:
    x, D = _problem(1, n_signals=30, n_features=12, n_atoms=60)  # m > 2n: thin products
    rng = np.random.default_rng(7)
    lam = {"scalar": 0.25, "per_atom": rng.uniform(0.1, 0.4, 60),
           "per_coefficient": rng.uniform(0.1, 0.4, (30, 60))}[lam_kind]
    x_t, D_t = torch.tensor(x), torch.tensor(D)
    lam_t = torch.as_tensor(lam, dtype=torch.float64)
    fast = sc.sparse_code(x_t, D_t, lam_t, method="fista", nonneg=nonneg, tol=1e-11,
                          max_iter=100_000)
    plain = sc.sparse_code(x_t, D_t.clone().requires_grad_(True), lam_t, method="fista",
                           nonneg=nonneg, tol=1e-11, max_iter=100_000)
    assert fast.converged and plain.converged
    torch.testing.assert_close(fast.codes, plain.codes.detach(), rtol=0, atol=1e-8)
    torch.testing.assert_close(fast.energy, plain.energy.detach(), rtol=1e-12, atol=0)
    assert float(fast.optimality_gap.max()) <= 1e-11


@pytest.mark.parametrize("nonneg", [False, True])
def test_each_signal_meets_the_stopping_rule_on_its_own(nonneg: bool) -> None:
    x, D = _problem(2)
    problem = SparseCodingProblem(torch.tensor(x), torch.tensor(D), 0.2, nonneg=nonneg)
    run = shrinking_fista(problem, max_iter=10_000, tol=1e-9)
    codes, n_iter, converged, step = run.codes, run.n_iter, run.converged, run.step_size
    assert converged and 0 < n_iter < 10_000
    gaps = problem.optimality_gap(codes, 1.0 / step)
    assert float(gaps.max()) <= 1e-9
    np.testing.assert_allclose(codes.numpy(), sklearn_lasso_codes(x, D, 0.2, nonneg), atol=1e-6)


@pytest.mark.parametrize("nonneg", [False, True])
def test_zero_screening_is_the_subgradient_condition(nonneg: bool) -> None:
    correlation = torch.tensor([[0.5, -0.5], [0.5, -0.7], [0.7, -0.1]], dtype=torch.float64)
    screened = zero_is_optimal(correlation, torch.tensor(0.6, dtype=torch.float64), nonneg)
    # signed: |c| <= lam for every atom; non-negative: c <= lam for every atom
    expected = [True, True, False] if nonneg else [True, False, False]
    assert screened.tolist() == expected


def test_routing_only_without_autograd() -> None:
    x, D = _problem(3, n_signals=4)
    x_t, D_t = torch.tensor(x), torch.tensor(D)
    assert uses_fast_dense_path(SparseCodingProblem(x_t, D_t, 0.1), None, False)
    assert not uses_fast_dense_path(SparseCodingProblem(x_t, D_t, 0.1), None, True)
    needs_grad = D_t.clone().requires_grad_(True)
    assert not uses_fast_dense_path(SparseCodingProblem(x_t, needs_grad, 0.1), None, False)
    with torch.no_grad():
        assert uses_fast_dense_path(SparseCodingProblem(x_t, needs_grad, 0.1), None, False)


def test_max_iter_budget_reports_non_convergence() -> None:
    x, D = _problem(4)
    with pytest.warns(sc.ConvergenceWarning, match=r"fista did not converge in max_iter=2"):
        result = sc.sparse_code(torch.tensor(x), torch.tensor(D), 0.1, method="fista",
                                max_iter=2)
    assert result.converged is False and result.n_iter == 2
