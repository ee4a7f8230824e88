"""Numerics on bad or unusual input (docs/reliability.md "Numerics and memory"): empty
batches, float16/bfloat16, argument types, numpy dtype mixing, huge budgets, and chunked
solving of large batches (chunked == unchunked to the last bit)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import sklearn_lasso_codes
from hypothesis import given, settings
from hypothesis import strategies as st

import sparsecnn as sc
from sparsecnn.inference import METHODS, SparseCodingProblem, circular_sparse_code
from sparsecnn.inference import solve as solve_module
from sparsecnn.nn import SparseConv2d, SparseLinear

LAM = 0.1


def dense_problem(n_signals: int = 7, dtype: torch.dtype = torch.float64, seed: int = 3):
    generator = torch.Generator().manual_seed(seed)
    D = torch.randn(16, 24, generator=generator, dtype=torch.float64)
    D = D / torch.linalg.vector_norm(D, dim=0)
    x = torch.randn(n_signals, 16, generator=generator, dtype=torch.float64)
    return x.to(dtype), D.to(dtype)


def conv_dictionary() -> sc.ConvDictionary:
    weight = torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(5),
                         dtype=torch.float64)
    return sc.ConvDictionary(weight, padding=1)


# -- empty batches ------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("numpy_input", [False, True])
def test_empty_dense_batch(method, numpy_input) -> None:
    _, D = dense_problem()
    x = np.zeros((0, 16)) if numpy_input else torch.zeros(0, 16, dtype=torch.float64)
    result = sc.sparse_code(x, D, LAM, method=method)
    assert tuple(result.codes.shape) == (0, 24)
    assert tuple(result.energy.shape) == tuple(result.optimality_gap.shape) == (0,)
    assert isinstance(result.codes, np.ndarray) == numpy_input
    assert result.converged and result.n_iter == 0
    assert result.step_size > 0


@pytest.mark.parametrize("method", [m for m in METHODS if m != "homotopy"])
def test_empty_conv_batch(method) -> None:
    result = sc.sparse_code(torch.zeros(0, 3, 8, 8, dtype=torch.float64), conv_dictionary(),
                            LAM, method=method, return_history=method != "closed_form")
    assert tuple(result.codes.shape) == (0, 4, 8, 8)
    assert result.converged and result.n_iter == 0
    if method != "closed_form":
        assert tuple(result.history.shape) == (1, 0)


def test_empty_circular_batch() -> None:
    result = circular_sparse_code(torch.zeros(0, 3, 8, 8), torch.randn(4, 3, 3, 3), LAM)
    assert tuple(result.codes.shape) == (0, 4, 8, 8)
    assert result.converged and result.n_iter == 0


@pytest.mark.parametrize("n_iter", [0, 3])
def test_empty_batch_layers_match_nn_shapes(n_iter) -> None:
    torch.manual_seed(0)
    conv = SparseConv2d(3, 4, 3, padding=1, n_iter=n_iter)
    linear = SparseLinear(16, 8, n_iter=n_iter)
    reference = torch.nn.Conv2d(3, 4, 3, padding=1)(torch.randn(0, 3, 8, 8))
    assert conv(torch.randn(0, 3, 8, 8)).shape == reference.shape
    assert linear(torch.randn(0, 16)).shape == (0, 8)


def test_kernel_larger_than_input_in_a_layer() -> None:
    with pytest.raises(ValueError, match=r"signal_shape is too small for the kernel \(5, 5\) "
                                         r"with padding \(0, 0\): spatial size \(3, 3\)"):
        SparseConv2d(3, 4, 5, n_iter=3)(torch.randn(1, 3, 3, 3))


# -- float16 / bfloat16 ---------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("method", ["fista", "homotopy", "ista", "lca"])
def test_low_precision_is_solved_in_float32(dtype, method) -> None:
    """The codes of a float16/bfloat16 problem are its float64 minimiser (scikit-learn's
    Lasso on the same rounded x and D) up to the dtype's rounding of the codes, and
    converged=True means the float32-judged gap met tol (before: bfloat16 FISTA reported
    converged with codes off by 1.29)."""
    x, D = dense_problem(dtype=dtype)
    result = sc.sparse_code(x, D, LAM, method=method, max_iter=100_000, tol=1e-5)
    reference = sklearn_lasso_codes(x.double().numpy(), D.double().numpy(), LAM, False)
    assert result.codes.dtype == dtype
    assert result.converged
    assert float(result.optimality_gap.max()) <= 1e-5
    scale = float(np.abs(reference).max())
    error = float(np.abs(result.codes.double().numpy() - reference).max())
    assert error <= torch.finfo(dtype).eps * scale + 1e-4 * scale


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_non_convergence_is_reported(dtype) -> None:
    x, D = dense_problem(dtype=dtype)
    with pytest.warns(sc.ConvergenceWarning, match=r"ista did not converge in max_iter=5"):
        result = sc.sparse_code(x, D, LAM, method="ista", max_iter=5)
    assert not result.converged and float(result.optimality_gap.max()) > 1e-6


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("make", [
    lambda: SparseConv2d(3, 4, 3, padding=1, n_iter=3),
    lambda: SparseLinear(16, 8, n_iter=3, method="fista"),
])
def test_low_precision_layers_iterate_in_float32(dtype, make) -> None:
    """A .half()/.bfloat16() layer (before: an internal assert in the fused add-relu) gives
    the float32 layer with the same rounded weights, rounded to the dtype."""
    torch.manual_seed(0)
    layer = make().to(dtype)
    x = torch.randn(2, 3, 8, 8) if isinstance(layer, SparseConv2d) else torch.randn(2, 16)
    x = x.to(dtype)
    output = layer(x)
    reference = make()
    reference.load_state_dict({k: v.float() for k, v in layer.state_dict().items()})
    expected = reference(x.float())
    assert output.dtype == dtype
    scale = float(expected.abs().max())
    assert float((output.float() - expected).abs().max()) <= 2 * torch.finfo(dtype).eps * scale


def test_circular_refuses_half_precision() -> None:
    with pytest.raises(TypeError, match=r"circular_sparse_code needs float32 or float64 "
                                        r"filters and x; got filters of dtype torch.float16"):
        circular_sparse_code(torch.zeros(1, 1, 8, 8, dtype=torch.float16),
                             torch.ones(2, 1, 3, 3, dtype=torch.float16), LAM)


def test_layer_refuses_mixed_dtypes() -> None:
    with pytest.raises(TypeError, match=r"weight has dtype torch.float32 but x has dtype "
                                        r"torch.float64; expected the same floating dtype"):
        SparseLinear(16, 8, n_iter=3)(torch.randn(2, 16, dtype=torch.float64))


# -- argument types -------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["no", 0, None, 1.0])
def test_nonneg_must_be_a_bool(value) -> None:
    x, D = dense_problem()
    with pytest.raises(TypeError, match=r"nonneg must be a bool \(True or False\); got "):
        sc.sparse_code(x, D, LAM, nonneg=value)
    with pytest.raises(TypeError, match=r"nonneg must be a bool"):
        circular_sparse_code(torch.zeros(1, 1, 8, 8), torch.ones(2, 1, 3, 3), LAM,
                             nonneg=value)


def test_numpy_bool_is_a_bool() -> None:
    x, D = dense_problem()
    codes = sc.sparse_code(x, D, LAM, nonneg=np.bool_(True), method="homotopy").codes
    assert torch.equal(codes, sc.sparse_code(x, D, LAM, nonneg=True, method="homotopy").codes)


def test_numpy_dtype_mix_is_refused() -> None:
    """Before: a float64 numpy x was silently solved in float32."""
    x, D = dense_problem()
    with pytest.raises(TypeError, match=r"x is a numpy array of dtype float64 but D has dtype "
                                        r"torch.float32; expected the same floating dtype"):
        sc.sparse_code(x.numpy(), D.float(), LAM)
    with pytest.raises(TypeError, match=r"x is a numpy array of dtype float64 but filters "
                                        r"has dtype torch.float32"):
        circular_sparse_code(np.zeros((1, 1, 8, 8)), torch.ones(2, 1, 3, 3), LAM)
    result = sc.sparse_code(x.float().numpy(), D.float(), LAM)  # same dtype: accepted
    assert result.codes.dtype == np.float32


def test_homotopy_huge_budget_is_clamped() -> None:
    """Before: OverflowError converting 10**30 to the kernel's int64."""
    x, D = dense_problem()
    huge = sc.sparse_code(x, D, LAM, method="homotopy", max_iter=10**30)
    assert huge.converged
    assert torch.equal(huge.codes, sc.sparse_code(x, D, LAM, method="homotopy").codes)


# -- chunked solving ------------------------------------------------------------------------
def solve_in_chunks(monkeypatch, rows: int, *args, **kwargs):
    """``sparse_code`` with chunks of ``rows`` signals; returns the result and the batch size
    every solver call saw."""
    x = args[0]
    per_signal = x.element_size() * solve_module.WORKING_ARRAYS * (x.shape[1] + 24)
    seen: list[int] = []
    original = solve_module._solve

    def spy(problem, *rest):
        seen.append(problem.x.shape[0])
        return original(problem, *rest)

    with monkeypatch.context() as patch:
        patch.setattr(solve_module, "MAX_CHUNK_BYTES", rows * per_signal)
        patch.setattr(solve_module, "_solve", spy)
        result = sc.sparse_code(*args, **kwargs)
    return result, seen


@pytest.mark.parametrize(("method", "options", "grad"), [
    ("ista", {"max_iter": 30, "warn": False}, False),  # every chunk runs the same 30 steps
    ("fista", {"max_iter": 30, "warn": False}, True),  # the differentiable loop
    ("lca", {"max_iter": 30, "warn": False}, False),
    ("closed_form", {}, False),
    ("homotopy", {}, False),
])
def test_chunked_equals_unchunked_to_the_last_bit(monkeypatch, method, options, grad) -> None:
    """Aligned chunks (CHUNK_ALIGNMENT signals) of a 500-signal batch with per-signal
    thresholds (whose rows must follow the chunks): the same bits as the whole batch."""
    x, D = dense_problem(n_signals=500)
    x.requires_grad_(grad)
    lam = 0.05 + 0.1 * torch.rand(500, 24, generator=torch.Generator().manual_seed(2),
                                  dtype=torch.float64)
    rows = solve_module.CHUNK_ALIGNMENT
    whole = sc.sparse_code(x, D, lam, method=method, **options)
    chunked, seen = solve_in_chunks(monkeypatch, rows, x, D, lam, method=method, **options)
    assert seen == [rows, rows, 500 - 2 * rows]
    for name in ("codes", "energy", "optimality_gap"):
        assert torch.equal(getattr(whole, name).detach(), getattr(chunked, name).detach())
    assert chunked.converged == whole.converged
    assert chunked.n_iter == whole.n_iter


@settings(max_examples=12)
@given(rows=st.integers(1, 12))
def test_chunk_size_is_bounded(rows) -> None:
    """For every bound, no solver sees more than ``rows`` signals, every signal is solved
    once, and dense FISTA's codes (each signal stops by its own rule) agree with the whole
    batch's to rounding."""
    x, D = dense_problem(n_signals=11)
    whole = sc.sparse_code(x, D, LAM, method="fista")
    with pytest.MonkeyPatch.context() as patch:
        chunked, seen = solve_in_chunks(patch, rows, x, D, LAM, method="fista")
    assert max(seen) <= rows and sum(seen) == 11
    torch.testing.assert_close(chunked.codes, whole.codes, rtol=0, atol=1e-12)


def test_default_chunk_bound(monkeypatch) -> None:
    """The default working-set bound: 10^6 signals of 16 features are split into aligned
    chunks of at most 256 MiB / (16 arrays * 8 bytes * (16 + 24 entries)) signals."""
    x, D = dense_problem(n_signals=1)
    problem = SparseCodingProblem(x.expand(10**6, 16), D, LAM)  # a view: no 10^6 copy
    rows = solve_module.chunk_rows(problem)
    assert rows * 16 * 8 * 40 <= 256 << 20 < (rows + solve_module.CHUNK_ALIGNMENT) * 16 * 8 * 40
    assert rows % solve_module.CHUNK_ALIGNMENT == 0
