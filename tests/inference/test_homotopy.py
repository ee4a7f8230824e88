"""The exact homotopy (LARS-lasso) path against scikit-learn, KKT conditions and the fallbacks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from helpers import random_batch_problem, sklearn_lasso_codes
from hypothesis import given, settings
from hypothesis import strategies as st

import sparsecnn as sc
from sparsecnn.inference.homotopy import (
    DEGENERATE,
    NO_PATH_START,
    SOLVED,
    STEP_BUDGET_EXHAUSTED,
    _first_minimum,
    homotopy_path_ends,
)


def _problem(seed: int, n_signals: int = 30, n_features: int = 16, n_atoms: int = 48):
    return random_batch_problem(seed, n_signals, n_features, n_atoms, zero_fraction=0.2)


def _lasso(x: np.ndarray, D: np.ndarray, lam: float, nonneg: bool) -> np.ndarray:
    return sklearn_lasso_codes(x, D, lam, nonneg, tol=1e-15)


@pytest.mark.parametrize("nonneg", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_exact_against_sklearn_lasso(nonneg: bool, dtype: torch.dtype) -> None:
    x, D = _problem(0)
    result = sc.sparse_code(torch.tensor(x, dtype=dtype), torch.tensor(D, dtype=dtype), 0.3,
                            method="homotopy", nonneg=nonneg)
    assert result.converged and result.method == "homotopy"
    atol = 1e-9 if dtype == torch.float64 else 2e-5
    np.testing.assert_allclose(result.codes.double().numpy(), _lasso(x, D, 0.3, nonneg),
                               atol=atol)
    assert bool((result.codes[: len(x) // 5] == 0).all())
    if nonneg:
        assert bool((result.codes >= 0).all())


@pytest.mark.parametrize("nonneg", [False, True])
@pytest.mark.parametrize("lam_kind", ["per_atom", "per_coefficient"])
def test_weighted_thresholds_against_rescaled_lasso(nonneg: bool, lam_kind: str) -> None:
    """Per-atom weights: ``a_i = c_i / lam_i`` turns them into sklearn's unit penalty on atoms
    ``d_i / lam_i``.  A per-coefficient lam gives every signal its own row."""
    x, D = _problem(1, n_signals=12)
    rng = np.random.default_rng(3)
    per_atom = rng.uniform(0.1, 0.5, D.shape[1])
    lam = per_atom if lam_kind == "per_atom" else np.tile(per_atom, (len(x), 1))
    if lam_kind == "per_coefficient":
        lam[::2] *= 1.5  # the rows differ
    codes = sc.sparse_code(x, D, lam, method="homotopy", nonneg=nonneg).codes
    for row in range(len(x)):
        weights = lam if lam.ndim == 1 else lam[row]
        expected = _lasso(x[row:row + 1], D / weights, 1.0, nonneg)[0] / weights
        np.testing.assert_allclose(codes[row], expected, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 10), st.integers(1, 24), st.floats(0.01, 2.0),
       st.integers(0, 2**31 - 1), st.booleans())
def test_end_point_satisfies_the_kkt_conditions(n_features: int, n_atoms: int, lam: float,
                                                seed: int, nonneg: bool) -> None:
    """For every problem: ``|D^T (x - D a)| <= lam`` with equality ``= lam sign(a_i)`` on the
    support (``D^T (x - D a) <= lam``, equality where ``a_i > 0``, if nonneg) -- the optimality
    conditions of docs/theory.md A.1/A.3 -- up to rounding."""
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((n_features, n_atoms))
    D /= np.linalg.norm(D, axis=0)
    x = 2 * rng.standard_normal((3, n_features))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sc.ConvergenceWarning)
        result = sc.sparse_code(x, D, lam, method="homotopy", nonneg=nonneg,
                                max_iter=10_000, tol=1e-12)
    codes = result.codes
    residual_correlation = (x - codes @ D.T) @ D
    scale = 1e-8 * (1 + np.abs(x @ D).max())
    support = codes != 0
    if nonneg:
        assert (codes >= 0).all()
        assert (residual_correlation <= lam + scale).all()
    else:
        assert (np.abs(residual_correlation) <= lam + scale).all()
        assert np.allclose(residual_correlation[support], lam * np.sign(codes[support]),
                           atol=scale)
    if nonneg:
        assert np.allclose(residual_correlation[support], lam, atol=scale)


@pytest.mark.parametrize("nonneg", [False, True])
@pytest.mark.parametrize("working_dtype", [np.float32, np.float64])
def test_benchmark_shaped_end_points_satisfy_the_kkt_conditions(nonneg: bool,
                                                                working_dtype: type) -> None:
    """The compiled kernels (NumPy error model: a zero divisor gives inf, no exception) on a
    P1-shaped problem -- 64 features, 256 unit atoms, long paths -- end where the float64
    optimality conditions of docs/theory.md A.1/A.3 hold: ``|D^T (x - D a)| <= lam``,
    ``= lam sign(a_i)`` on the support (``<= lam``, ``= lam`` where ``a_i > 0``, if nonneg)."""
    rng = np.random.default_rng(11)
    D = rng.standard_normal((64, 256))
    D /= np.linalg.norm(D, axis=0)
    x = rng.standard_normal((40, 64))
    lam = 0.05 * float(np.abs(x @ D).max())
    codes, steps, status = homotopy_path_ends(D.T @ D, x @ D, np.full((1, 256), lam), nonneg,
                                              10_000, working_dtype=working_dtype)
    assert (status == SOLVED).all() and steps.max() > 20
    residual_correlation = (x - codes @ D.T) @ D
    scale = 1e-9 * float(np.abs(x @ D).max())
    support = codes != 0
    if nonneg:
        assert (codes >= 0).all()
        assert (residual_correlation <= lam + scale).all()
        np.testing.assert_allclose(residual_correlation[support], lam, atol=scale)
    else:
        assert (np.abs(residual_correlation) <= lam + scale).all()
        np.testing.assert_allclose(residual_correlation[support],
                                   lam * np.sign(codes[support]), atol=scale)


def test_nearly_duplicate_atoms_are_degenerate_and_fall_back_to_fista() -> None:
    """An atom within 1e-6 of another makes ``G_AA`` singular to working precision when both
    join: the path stops (status 2) and FISTA solves those signals."""
    rng = np.random.default_rng(0)
    D = rng.standard_normal((8, 12))
    D /= np.linalg.norm(D, axis=0)
    twin = D[:, 0] + 1e-6 * rng.standard_normal(8)
    twin /= np.linalg.norm(twin)
    D = np.concatenate([D, twin[:, None]], axis=1)
    x = rng.standard_normal((20, 8)) + 3 * twin
    _, _, status = homotopy_path_ends(D.T @ D, x @ D, np.full((1, 13), 0.05), False, 1000)
    assert (status == DEGENERATE).any()
    result = sc.sparse_code(x, D, 0.05, method="homotopy", max_iter=200_000, tol=1e-12)
    assert result.converged
    # scikit-learn's coordinate descent crawls on twin atoms: ours must be no worse, and
    # optimal by the KKT conditions |D^T (x - D a)| <= lam
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference_energy = sc.energy(x, D, _lasso(x, D, 0.05, nonneg=False), 0.05)
    assert (result.energy <= reference_energy * (1 + 1e-9)).all()
    assert np.abs((x - result.codes @ D.T) @ D).max() <= 0.05 * (1 + 1e-6)


def test_step_budget_falls_back_to_fista_and_warns() -> None:
    x, D = _problem(3, n_signals=6)
    _, steps, status = homotopy_path_ends(D.T @ D, x @ D, np.full((1, 48), 0.05), False, 2)
    assert (status == STEP_BUDGET_EXHAUSTED).any() and steps.max() == 2
    with pytest.warns(sc.ConvergenceWarning, match="homotopy did not converge in max_iter=2"):
        result = sc.sparse_code(x, D, 0.05, method="homotopy", max_iter=2)
    assert not result.converged


def test_zero_threshold_rows_are_solved_by_fista() -> None:
    """lam = 0 has no path start (t_0 = max |c| / lam): least squares, solved by FISTA, equals
    numpy's on an undercomplete dictionary."""
    rng = np.random.default_rng(4)
    D = rng.standard_normal((12, 5))
    D /= np.linalg.norm(D, axis=0)
    x = rng.standard_normal((4, 12))
    _, _, status = homotopy_path_ends(D.T @ D, x @ D, np.zeros((1, 5)), False, 1000)
    assert (status == NO_PATH_START).all()
    result = sc.sparse_code(x, D, 0.0, method="homotopy", max_iter=100_000, tol=1e-13)
    assert result.converged
    expected = np.linalg.lstsq(D, x.T, rcond=None)[0].T
    np.testing.assert_allclose(result.codes, expected, atol=1e-9)


@pytest.mark.parametrize("nonneg", [False, True])
def test_float32_event_search_gives_the_float64_end_points(nonneg: bool) -> None:
    """The float32 search only orders the events; the end point and its certificate are
    float64, so both working dtypes return the same codes (to float64 rounding)."""
    x, D = _problem(9, n_signals=300, n_features=24, n_atoms=96)
    arguments = (D.T @ D, x @ D, np.full((1, 96), 0.1), nonneg, 1000)
    single = homotopy_path_ends(*arguments, working_dtype=np.float32)
    double = homotopy_path_ends(*arguments, working_dtype=np.float64)
    assert (single[2] == SOLVED).all() and (double[2] == SOLVED).all()
    np.testing.assert_allclose(single[0], double[0], atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 7, 8, 9, 256, 259])
def test_event_search_minimum_is_numpys_first_argmin(dtype: type, n: int) -> None:
    """The event scan's minimum (eight interleaved running minima, then a scan) is the first
    smallest entry, as ``np.argmin`` defines it: with ties in different lanes, +inf entries
    (blocked atoms) and all entries +inf."""
    rng = np.random.default_rng(n)
    for trial in range(50):
        values = rng.integers(0, 4, size=n).astype(dtype)  # few distinct values: many ties
        values[rng.random(n) < 0.3] = np.inf
        if trial == 0:
            values[:] = np.inf
        assert _first_minimum(values) == int(np.argmin(values))


def test_working_dtype_is_checked() -> None:
    x, D = _problem(10, n_signals=2)
    with pytest.raises(ValueError, match="working_dtype must be float32 or float64; got int64"):
        homotopy_path_ends(D.T @ D, x @ D, np.full((1, 48), 0.1), False, 10,
                           working_dtype=np.int64)


def test_empty_batch() -> None:
    _, D = _problem(8, n_signals=1)
    result = sc.sparse_code(np.zeros((0, 16)), D, 0.2, method="homotopy")
    assert result.codes.shape == (0, 48) and result.converged and result.n_iter == 0


def test_threads_give_identical_codes() -> None:
    x, D = _problem(5, n_signals=700)
    arguments = (D.T @ D, x @ D, np.full((1, 48), 0.2), False, 1000)
    one = homotopy_path_ends(*arguments, threads=1)
    two = homotopy_path_ends(*arguments, threads=2)
    for first, second in zip(one, two, strict=True):
        np.testing.assert_array_equal(first, second)
    assert (one[2] == SOLVED).all()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"init": np.zeros((2, 48))}, "init is not used by method='homotopy'"),
    ({"step_size": 0.1}, "step_size is not used by method='homotopy'"),
    ({"return_history": True}, "return_history=True is not available for method='homotopy'"),
])
def test_unused_options_are_refused(kwargs: dict, message: str) -> None:
    x, D = _problem(6, n_signals=2)
    with pytest.raises(ValueError, match=message):
        sc.sparse_code(x, D, 0.2, method="homotopy", **kwargs)


def test_convolutional_dictionary_is_refused() -> None:
    D = sc.ConvDictionary(torch.randn(4, 1, 3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"method='homotopy' needs a dense dictionary .*got "
                                         r"ConvDictionary"):
        sc.sparse_code(torch.randn(1, 1, 8, 8, dtype=torch.float64), D, 0.1, method="homotopy")


def test_autograd_inputs_are_refused() -> None:
    x, D = _problem(7, n_signals=2)
    signals = torch.tensor(x, requires_grad=True)
    with pytest.raises(ValueError, match="method='homotopy' is not differentiable"):
        sc.sparse_code(signals, torch.tensor(D), 0.2, method="homotopy")
    with torch.no_grad():  # no graph to build: allowed
        sc.sparse_code(signals, torch.tensor(D), 0.2, method="homotopy")
