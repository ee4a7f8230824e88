"""Laws that hold for every input (hypothesis): ISTA never increases the energy, codes are
non-negative for every method when nonneg=True, a solution's optimality gap is small."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

import sparsecnn as sc

problems = st.tuples(
    st.integers(2, 8),       # n_features
    st.integers(1, 12),      # n_atoms
    st.integers(1, 3),       # batch
    st.floats(0.0, 2.0),     # lam
    st.integers(0, 2**31 - 1),
)


def draw(n_features: int, n_atoms: int, batch: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    D = torch.randn(n_features, n_atoms, generator=generator, dtype=torch.float64)
    D = D / torch.linalg.vector_norm(D, dim=0)
    x = torch.randn(batch, n_features, generator=generator, dtype=torch.float64) * 2
    return D, x


@given(problems, st.booleans())
def test_ista_energy_never_increases(problem, nonneg: bool) -> None:
    n, m, batch, lam, seed = problem
    D, x = draw(n, m, batch, seed)
    history = sc.sparse_code(x, D, lam, method="ista", nonneg=nonneg, max_iter=60, tol=1e-15,
                             return_history=True, warn=False).history
    scale = 1e-12 * (1 + history.abs())
    assert torch.all(history[1:] <= history[:-1] + scale[:-1])


@given(problems, st.sampled_from(["closed_form", "ista", "fista", "lca", "homotopy"]))
def test_nonneg_codes_are_nonnegative(problem, method: str) -> None:
    n, m, batch, lam, seed = problem
    D, x = draw(n, m, batch, seed)
    codes = sc.sparse_code(x, D, lam, method=method, nonneg=True, max_iter=50,
                           warn=False).codes
    assert torch.all(codes >= 0)


@given(problems, st.booleans())
def test_fista_solution_beats_random_feasible_points(problem, nonneg: bool) -> None:
    n, m, batch, lam, seed = problem
    D, x = draw(n, m, batch, seed)
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
