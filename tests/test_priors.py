"""Thresholds and the bias <-> prior map: docs/theory.md checks 4, 5, 6 (identity part)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import sparsecnn as sc

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
nonneg = st.floats(0, 1e3, allow_nan=False, allow_infinity=False)


def test_soft_threshold_closed_form() -> None:
    z = torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0], dtype=torch.float64)
    expected = torch.sign(z) * torch.clamp(z.abs() - 1.0, min=0)
    assert torch.equal(sc.soft_threshold(z, 1.0), expected)
    assert torch.equal(sc.nonneg_threshold(z, 1.0), torch.clamp(z - 1.0, min=0))


@given(st.lists(finite, min_size=1, max_size=20), nonneg)
def test_soft_threshold_is_polarity_split_difference(values: list[float], theta: float) -> None:
    """Check 6: S_theta(z) = ReLU(z - theta) - ReLU(-z - theta) exactly."""
    z = torch.tensor(values, dtype=torch.float64).unsqueeze(0)
    split = sc.polarity_split(z, theta)
    assert torch.equal(sc.merge_polarity(split), sc.soft_threshold(z, theta))
    reference = np.sign(values) * np.maximum(np.abs(values) - theta, 0)
    np.testing.assert_array_equal(sc.soft_threshold(np.array(values), theta), reference)


@given(st.lists(finite, min_size=1, max_size=20), nonneg, nonneg)
def test_thresholds_are_monotone_in_lambda(values: list[float], a: float, b: float) -> None:
    low, high = min(a, b), max(a, b)
    z = np.array(values)
    assert np.all(np.abs(sc.soft_threshold(z, high)) <= np.abs(sc.soft_threshold(z, low)))
    assert np.all(sc.nonneg_threshold(z, high) <= sc.nonneg_threshold(z, low))


@given(st.lists(finite, min_size=1, max_size=10),
       st.lists(st.floats(1e-3, 1e3), min_size=1, max_size=10))
def test_bias_lambda_round_trip(biases: list[float], norms: list[float]) -> None:
    """Check 4: bias_to_lambda = -b/||w|| and lambda_to_bias = -lam ||w|| are inverses."""
    n = min(len(biases), len(norms))
    b, w = np.array(biases[:n]), np.array(norms[:n])
    lam = sc.bias_to_lambda(b, w)
    np.testing.assert_array_equal(lam, -b / w)
    np.testing.assert_allclose(sc.lambda_to_bias(lam, w), b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sc.prior_rate(b, w, noise_variance=0.5), -b / (0.5 * w),
                               rtol=1e-12, atol=1e-300)


def test_prior_is_proper_iff_negative_bias() -> None:
    """Check 4: proper iff b < 0, since int_0^inf exp(-lam a) da = 1/lam is finite iff lam > 0."""
    b = np.array([-2.0, -1e-12, 0.0, 1e-12, 3.0])
    np.testing.assert_array_equal(sc.prior_is_proper(b), [True, True, False, False, False])
    assert torch.equal(sc.prior_is_proper(torch.tensor(b)),
                       torch.tensor([True, True, False, False, False]))
    assert sc.prior_is_proper(-1.0) is True
    assert [sc.prior_kind(v) for v in (-1.0, 0.0, 2.0)] == ["proper", "flat", "anti-sparse"]
    # The normalising constant of the prior exists exactly for the proper ones.
    for bias in (-2.0, -0.5):
        lam = sc.bias_to_lambda(bias)
        grid = np.linspace(0, 60 / lam, 200001)
        integral = np.trapezoid(np.exp(-lam * grid), grid)
        assert integral == pytest.approx(1 / lam, rel=1e-6)


def test_relu_positive_homogeneity(generator: torch.Generator) -> None:
    """Check 5: ReLU(w^T x + b) = ||w|| ReLU((w/||w||)^T x + b/||w||) to 1e-12."""
    w = torch.randn(32, 64, generator=generator, dtype=torch.float64) * 3
    b = torch.randn(32, generator=generator, dtype=torch.float64)
    x = torch.randn(10, 64, generator=generator, dtype=torch.float64)
    norm = torch.linalg.vector_norm(w, dim=1)
    lhs = torch.relu(x @ w.T + b)
    lam = sc.bias_to_lambda(b, norm)
    rhs = norm * sc.nonneg_threshold(x @ (w / norm[:, None]).T, lam)
    assert torch.max(torch.abs(lhs - rhs)) <= 1e-12


@pytest.mark.parametrize(("function", "argument"), [
    (sc.bias_to_lambda, "b"), (sc.lambda_to_bias, "lam"), (sc.prior_is_proper, "b")])
def test_non_finite_input_is_refused(function, argument: str) -> None:
    with pytest.raises(ValueError, match=rf"{argument} must be finite; got 1 NaN/Inf entry"):
        function(np.array([1.0, np.nan]))


def test_zero_weight_norm_is_refused() -> None:
    with pytest.raises(ValueError, match=r"weight_norm must be > 0 everywhere"):
        sc.bias_to_lambda(np.array([1.0, 2.0]), np.array([1.0, 0.0]))


def test_merge_polarity_needs_even_size() -> None:
    with pytest.raises(ValueError, match=r"codes must have an even size along dim=1; got 3"):
        sc.merge_polarity(torch.zeros(2, 3))


def test_types_round_trip() -> None:
    assert isinstance(sc.soft_threshold(2.0, 0.5), float)
    assert isinstance(sc.soft_threshold(np.ones(3), 0.5), np.ndarray)
    assert isinstance(sc.soft_threshold(torch.ones(3), 0.5), torch.Tensor)
    with pytest.raises(TypeError, match=r"z must be a torch.Tensor, numpy array or number"):
        sc.soft_threshold("abc", 0.5)
