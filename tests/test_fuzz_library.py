"""Fuzzing the public library entry points: for any arguments, of the
right type or not, ``sparse_code``, ``ConvDictionary``, ``DenseDictionary``, ``SparseConv2d``,
``SparseLinear``, ``bias_to_lambda`` and ``lambda_to_bias`` either succeed or raise an error
of a documented type (``ValueError``, ``TypeError``; ``SolverDivergedError`` for a solver
that diverges) -- never an internal ``RuntimeError``/``IndexError``/``AssertionError``, a
crash or a hang.  Sizes stay small so that every example is fast."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sparsecnn as sc
from sparsecnn.nn import SparseConv2d, SparseLinear

DOCUMENTED = (ValueError, TypeError, sc.SolverDivergedError)
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])

JUNK = st.one_of(st.none(), st.text(max_size=4), st.just([1, "a"]), st.just({"a": 1}),
                 st.just(object()), st.booleans())
SCALAR = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                   st.integers(-(10**30), 10**30), JUNK)
DTYPES = st.sampled_from([torch.float32, torch.float64, torch.int64, torch.bool])


@st.composite
def tensors(draw: st.DrawFn, max_dims: int = 4) -> torch.Tensor:
    shape = draw(st.lists(st.integers(0, 5), min_size=0, max_size=max_dims))
    dtype = draw(DTYPES)
    seed = draw(st.integers(0, 2**16))
    values = torch.randn(shape, generator=torch.Generator().manual_seed(seed),
                         dtype=torch.float64)
    if draw(st.booleans()) and values.numel():
        values.view(-1)[0] = draw(st.sampled_from([float("nan"), float("inf"), 1e300, 0.0]))
    value = values.to(dtype)
    return value.numpy() if draw(st.booleans()) else value


ARRAYS = st.one_of(tensors(), JUNK, SCALAR)


def outcome(function, *args, **kwargs) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            function(*args, **kwargs)
        except DOCUMENTED:
            pass


def corrupt(draw: st.DrawFn, arguments: dict) -> dict:
    """``arguments`` with at most one value replaced by a wrong one (so that the checks after
    the first wrong value, and the valid path itself, are reached)."""
    name = draw(st.one_of(st.none(), st.sampled_from(sorted(arguments))))
    if name is not None:
        arguments[name] = draw(ARRAYS)
    return arguments


@st.composite
def sparse_code_arguments(draw: st.DrawFn) -> dict:
    seed = draw(st.integers(0, 2**16))
    generator = torch.Generator().manual_seed(seed)
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    batch = draw(st.integers(0, 3))
    if draw(st.booleans()):
        m, n = draw(st.integers(1, 6)), draw(st.integers(1, 6))
        D: object = sc.DenseDictionary(torch.randn(m, n, generator=generator, dtype=dtype))
        x = torch.randn(batch, m, generator=generator, dtype=dtype)
    else:
        c, k, size = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 6))
        D = sc.ConvDictionary(torch.randn(3, c, k, k, generator=generator, dtype=dtype))
        x = torch.randn(batch, c, size, size, generator=generator, dtype=dtype)
    if draw(st.booleans()) and x.numel():
        x.view(-1)[0] = draw(st.sampled_from([float("nan"), float("inf"), 1e30]))
    return corrupt(draw, {
        "x": x, "D": D, "lam": draw(st.floats(0, 2)),
        "method": draw(st.sampled_from(["fista", "ista", "lca", "homotopy", "closed_form"])),
        "nonneg": draw(st.booleans()), "max_iter": draw(st.integers(1, 30)),
        "tol": draw(st.floats(1e-8, 1e-2))})


@FUZZ
@given(arguments=sparse_code_arguments())
def test_sparse_code(arguments: dict) -> None:
    outcome(sc.sparse_code, **arguments)


@FUZZ
@given(weight=ARRAYS, stride=st.one_of(st.integers(-2, 3), st.just((1, 2)), JUNK),
       padding=st.one_of(st.integers(-2, 3), JUNK),
       signal_size=st.one_of(st.none(), st.tuples(st.integers(-1, 8), st.integers(-1, 8)),
                             JUNK))
def test_conv_dictionary(weight, stride, padding, signal_size) -> None:
    def build_and_use() -> None:
        dictionary = sc.ConvDictionary(weight, stride=stride, padding=padding,
                                       signal_size=signal_size)
        dictionary.lipschitz()

    outcome(build_and_use)


@FUZZ
@given(matrix=ARRAYS)
def test_dense_dictionary(matrix) -> None:
    def build_and_use() -> None:
        sc.DenseDictionary(matrix).lipschitz()

    outcome(build_and_use)


@st.composite
def layer_arguments(draw: st.DrawFn, conv: bool) -> dict:
    n_in, n_out = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    batch, size = draw(st.integers(0, 2)), draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**16))
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, n_in, size, size) if conv else (batch, n_in)
    arguments = {"in": n_in, "out": n_out, "n_iter": draw(st.integers(0, 3)),
                 "x": torch.randn(shape, generator=generator)}
    if conv:
        arguments["kernel_size"] = draw(st.integers(1, 3))
    return corrupt(draw, arguments)


@FUZZ
@given(arguments=layer_arguments(conv=True))
def test_sparse_conv2d(arguments: dict) -> None:
    def build_and_run() -> None:
        layer = SparseConv2d(arguments["in"], arguments["out"], arguments["kernel_size"],
                             n_iter=arguments["n_iter"])
        layer(arguments["x"])

    outcome(build_and_run)


@FUZZ
@given(arguments=layer_arguments(conv=False))
def test_sparse_linear(arguments: dict) -> None:
    def build_and_run() -> None:
        layer = SparseLinear(arguments["in"], arguments["out"], n_iter=arguments["n_iter"])
        layer(arguments["x"])

    outcome(build_and_run)


@FUZZ
@given(b=ARRAYS, norm=st.one_of(ARRAYS, SCALAR))
@pytest.mark.parametrize("function", [sc.bias_to_lambda, sc.lambda_to_bias])
def test_bias_lambda_maps(function, b, norm) -> None:
    outcome(function, b, norm)


def test_the_documented_types_are_what_the_fuzz_allows() -> None:
    # the allowed set must stay narrow: an internal error type slipping in would hide bugs
    assert not issubclass(RuntimeError, DOCUMENTED) and not issubclass(IndexError, DOCUMENTED)
    with pytest.raises(ValueError):
        sc.sparse_code(np.ones((2, 3)), sc.DenseDictionary(torch.eye(4, dtype=torch.float64)), 0.1)
