"""ISTA and FISTA (inference/proximal_gradient.py): docs/theory.md Part D checks 11, 13 and 14, and
laws for every input (hypothesis): ISTA never increases the energy, FISTA's solution beats
random feasible points."""

from __future__ import annotations

import pytest
import torch
from helpers import draw_dense_problem, small_dense_problems
from hypothesis import given
from hypothesis import strategies as st

import sparsecnn as sc

TIGHT = {"max_iter": 200_000, "tol": 1e-12}


def test_check11_ista_monotone_fixed_point_and_convergence(orthonormal_dictionary,
                                                           overcomplete_dictionary,
                                                           signals) -> None:
    """Check 11."""
    x, theta = signals, 0.4
    history = sc.sparse_code(x, overcomplete_dictionary, theta, method="ista", nonneg=True,
                             max_iter=200, tol=1e-15, return_history=True, warn=False).history
    assert history.shape == (201, x.shape[0])
    assert torch.all(history[1:] <= history[:-1] + 1e-12)
    # orthonormal D: the one-shot ReLU is an ISTA fixed point
    start = torch.relu(x @ orthonormal_dictionary - theta)
    after = sc.sparse_code(x, orthonormal_dictionary, theta, method="ista", nonneg=True,
                           max_iter=50, tol=1e-15, init=start, warn=False).codes
    assert torch.max(torch.abs(after - start)) <= 1e-12
    # overcomplete D: the T-step energy strictly decreases and ISTA reaches FISTA's optimum
    energies = [sc.sparse_code(x, overcomplete_dictionary, theta, method="ista", nonneg=True,
                               max_iter=t, tol=1e-15, warn=False).energy for t in (1, 5, 20)]
    assert torch.all(energies[1] < energies[0]) and torch.all(energies[2] < energies[1])
    optimum = sc.sparse_code(x, overcomplete_dictionary, theta, method="fista", nonneg=True,
                             **TIGHT)
    ista = sc.sparse_code(x, overcomplete_dictionary, theta, method="ista", nonneg=True,
                          **TIGHT)
    assert ista.converged
    assert torch.max(torch.abs(ista.energy - optimum.energy)) <= 1e-6
    assert torch.max(torch.abs(ista.codes - optimum.codes)) <= 1e-6


@pytest.mark.parametrize("nonneg", [False, True])
def test_check13_ista_fista_rates(overcomplete_dictionary, signals, nonneg) -> None:
    """Check 13 (Beck & Teboulle 2009): F(a^k) - F* <= L ||a* ||^2 / (2k) for ISTA and
    <= 2 L ||a*||^2 / (k+1)^2 for FISTA (from a^0 = 0), every k <= 500."""
    D, x, theta = overcomplete_dictionary, signals, 0.3
    best = sc.sparse_code(x, D, theta, method="fista", nonneg=nonneg, **TIGHT)
    lipschitz = 1.0 / best.step_size
    distance2 = torch.sum(best.codes ** 2, dim=1)
    k = torch.arange(1, 501, dtype=torch.float64)[:, None]
    for method, bound in (("ista", lipschitz * distance2 / (2 * k)),
                          ("fista", 2 * lipschitz * distance2 / (k + 1) ** 2)):
        history = sc.sparse_code(x, D, theta, method=method, nonneg=nonneg, restart=False,
                                 max_iter=500, tol=1e-15, return_history=True,
                                 warn=False).history
        gap = history[1:] - best.energy
        assert torch.all(gap <= bound + 1e-10), method


@pytest.mark.parametrize("shape", ["dense", "conv"])
def test_check14_one_ista_step_from_zero(overcomplete_dictionary, signals, generator,
                                         shape) -> None:
    """Check 14: one projected-ISTA step from 0 equals ReLU(D^T x - lam) / L to 1e-12."""
    if shape == "dense":
        D, x = sc.DenseDictionary(overcomplete_dictionary), signals
        lam = torch.rand(128, generator=generator, dtype=torch.float64)
    else:
        weight = torch.randn(6, 2, 3, 3, generator=generator, dtype=torch.float64)
        D = sc.ConvDictionary(weight, stride=2, padding=1).normalized()
        x = torch.randn(3, 2, 9, 9, generator=generator, dtype=torch.float64)
        lam = torch.rand(6, generator=generator, dtype=torch.float64)
    result = sc.sparse_code(x, D, lam, method="ista", nonneg=True, max_iter=1, warn=False)
    per_channel = lam.view(-1, 1, 1) if shape == "conv" else lam
    expected = torch.relu(D.analysis(x) - per_channel) / D.lipschitz(x.shape[1:])
    assert torch.max(torch.abs(result.codes - expected)) <= 1e-12


@given(small_dense_problems, st.booleans())
def test_ista_energy_never_increases(problem, nonneg: bool) -> None:
    n, m, batch, lam, seed = problem
    D, x = draw_dense_problem(n, m, batch, seed)
    history = sc.sparse_code(x, D, lam, method="ista", nonneg=nonneg, max_iter=60, tol=1e-15,
                             return_history=True, warn=False).history
    scale = 1e-12 * (1 + history.abs())
    assert torch.all(history[1:] <= history[:-1] + scale[:-1])


@given(small_dense_problems, st.booleans())
def test_fista_solution_beats_random_feasible_points(problem, nonneg: bool) -> None:
    n, m, batch, lam, seed = problem
    D, x = draw_dense_problem(n, m, batch, seed)
    result = sc.sparse_code(x, D, lam, method="fista", nonneg=nonneg, max_iter=50_000,
                            tol=1e-10)
    assert result.converged
    generator = torch.Generator().manual_seed(seed + 1)
    for _ in range(20):
        other = result.codes + 0.05 * torch.randn(result.codes.shape, generator=generator,
                                                  dtype=torch.float64)
        if nonneg:
            other = torch.relu(other)
        assert torch.all(sc.energy(x, D, other, lam, nonneg=nonneg) >= result.energy - 1e-9)
