"""Opt-in progress of ``sparse_code`` (``verbose`` / ``callback``): the reported numbers are the
energy and optimality gap of the iterate, recomputed here with numpy, and the solve is the same
with or without monitoring."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import sparsecnn as sc

DTYPE = torch.float64


def dense_problem(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    matrix = rng.standard_normal((20, 40))
    return rng.standard_normal((5, 20)), matrix / np.linalg.norm(matrix, axis=0)


@pytest.mark.parametrize("method", ["ista", "fista", "lca"])
def test_callback_reports_energy_and_gap_of_the_final_codes(method: str) -> None:
    x, matrix = dense_problem()
    calls: list[tuple[int, dict]] = []
    result = sc.sparse_code(x, matrix, lam=0.3, method=method, nonneg=True, max_iter=3000,
                            callback=lambda i, info: calls.append((i, info)),
                            progress_every=7)
    iterations = [i for i, _ in calls]
    assert iterations[:-1] == list(range(7, 7 * len(iterations[:-1]) + 1, 7))
    assert iterations[-1] == result.n_iter
    last = calls[-1][1]
    assert last["final"] and last["converged"] is result.converged is True
    residual = x - result.codes @ matrix.T
    energies = 0.5 * (residual ** 2).sum(1) + 0.3 * result.codes.sum(1)
    assert last["energy"] == pytest.approx(energies.mean(), rel=1e-12)
    assert last["gap"] == pytest.approx(result.optimality_gap.max(), rel=1e-9)
    # the energies reported along the way decrease towards the optimum (ISTA is monotone)
    if method == "ista":
        reported = [info["energy"] for _, info in calls]
        assert all(b <= a + 1e-12 for a, b in itertools.pairwise(reported))


def test_monitoring_does_not_change_the_solution() -> None:
    x, matrix = dense_problem(1)
    # the monitored solve takes the general loop, the plain one the fused dense path: both
    # reach the unique minimiser (the energy is strongly convex on the support)
    options = {"lam": 0.2, "method": "fista", "nonneg": True, "max_iter": 20000, "tol": 1e-11}
    plain = sc.sparse_code(x, matrix, **options)
    watched = sc.sparse_code(x, matrix, callback=lambda *_: None, **options)
    assert plain.converged and watched.converged
    np.testing.assert_allclose(watched.codes, plain.codes, atol=1e-8)


def test_verbose_prints_progress_to_stderr(capsys) -> None:
    conv = sc.ConvDictionary(torch.randn(4, 1, 3, 3, generator=torch.Generator()
                                         .manual_seed(0), dtype=DTYPE)).normalized()
    x = torch.randn(2, 1, 12, 12, generator=torch.Generator().manual_seed(1), dtype=DTYPE)
    result = sc.sparse_code(x, conv, lam=0.1, method="fista", max_iter=400, verbose=True,
                            progress_interval=1e-9, warn=False)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == result.n_iter + 1  # every step, then the end
    assert lines[0].startswith("sparse_code fista: iteration 1/400, energy ")
    state = "converged" if result.converged else "not converged"
    assert lines[-1].startswith(f"sparse_code fista: iteration {result.n_iter}/400")
    assert lines[-1].endswith(state)


def test_closed_form_and_homotopy_report_once() -> None:
    x, matrix = dense_problem(2)
    for method in ("closed_form", "homotopy"):
        calls = []
        sc.sparse_code(x, matrix, lam=0.3, method=method, nonneg=True, warn=False,
                       callback=lambda i, info, calls=calls: calls.append(i))
        assert len(calls) == 1


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"verbose": 1}, "verbose must be True or False"),
    ({"callback": 3}, "callback must be a callable"),
    ({"callback": print, "progress_every": 0}, "progress_every must be an integer >= 1"),
    ({"verbose": True, "progress_interval": -1.0}, "progress_interval must be a finite"),
])
def test_bad_progress_arguments_are_named(kwargs: dict, message: str) -> None:
    x, matrix = dense_problem()
    with pytest.raises((TypeError, ValueError), match=message):
        sc.sparse_code(x, matrix, lam=0.3, **kwargs)
