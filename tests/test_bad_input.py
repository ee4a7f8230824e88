"""Bad input gets a clear error naming the argument, the expected and the received value."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import sparsecnn as sc


@pytest.fixture
def problem():
    generator = torch.Generator().manual_seed(0)
    D = torch.randn(8, 12, generator=generator, dtype=torch.float64)
    D = D / torch.linalg.vector_norm(D, dim=0)
    x = torch.randn(3, 8, generator=generator, dtype=torch.float64)
    return x, D


def nan_at(tensor: torch.Tensor) -> torch.Tensor:
    bad = tensor.clone()
    bad.view(-1)[0] = float("nan")
    return bad


@pytest.mark.parametrize("where", ["x", "D", "lam"])
def test_non_finite_inputs(problem, where: str) -> None:
    x, D = problem
    lam = torch.full((12,), 0.1, dtype=torch.float64)
    args = {"x": x, "D": D, "lam": lam}
    args[where] = nan_at(args[where])
    name = where
    with pytest.raises(ValueError, match=rf"^{name} must be finite; got 1 NaN/Inf entry in a "
                                         r"tensor of shape"):
        sc.sparse_code(args["x"], args["D"], args["lam"])


def test_shape_mismatch(problem) -> None:
    x, D = problem
    with pytest.raises(ValueError, match=re.escape(
            "x must have shape (batch, 8) to match the dictionary's n_features=8; got shape "
            "(3, 7)")):
        sc.sparse_code(x[:, :7], D, 0.1)
    with pytest.raises(ValueError, match=re.escape(
            "lam must be a scalar or broadcastable to the codes of shape (3, 12)")):
        sc.sparse_code(x, D, torch.ones(5, dtype=torch.float64))
    conv = sc.ConvDictionary(torch.ones(2, 3, 3, 3))
    with pytest.raises(ValueError, match=re.escape(
            "x must have shape (batch, 3, H, W) to match the dictionary's in_channels=3; got "
            "shape (1, 1, 8, 8)")):
        sc.sparse_code(torch.ones(1, 1, 8, 8), conv, 0.1)


def test_zero_norm_atom(problem) -> None:
    x, D = problem
    D = D.clone()
    D[:, 4] = 0
    with pytest.raises(ValueError, match=re.escape("D has 1 zero-norm atom(s) (indices [4])")):
        sc.sparse_code(x, D, 0.1)


def test_negative_lambda_needs_explicit_opt_in(problem) -> None:
    x, D = problem
    with pytest.raises(ValueError, match=r"lam must be >= 0 \(the energy's l1 weight\); got "
                                         r"minimum -0\.5\. .*allow_negative_lam=True"):
        sc.sparse_code(x, D, -0.5, nonneg=True)
    with pytest.raises(ValueError, match=r"allow_negative_lam=True requires nonneg=True"):
        sc.sparse_code(x, D, -0.5, allow_negative_lam=True)
    q, _ = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64))
    result = sc.sparse_code(x, q, -0.5, nonneg=True, allow_negative_lam=True)
    assert torch.allclose(result.codes, torch.relu(x @ q + 0.5), atol=1e-6)


def test_dtype_and_device_mixes(problem) -> None:
    x, D = problem
    with pytest.raises(TypeError, match=re.escape(
            "x has dtype torch.float32 but D has dtype torch.float64; expected the same "
            "floating dtype")):
        sc.sparse_code(x.float(), D, 0.1)
    with pytest.raises(TypeError, match=r"lam has dtype torch.float32 but x has dtype "
                                        r"torch.float64"):
        sc.sparse_code(x, D, torch.tensor(0.1, dtype=torch.float32))
    with pytest.raises(ValueError, match=r"x is on device meta but D is on cpu; expected both "
                                         r"on the same device"):
        sc.sparse_code(torch.empty(3, 8, dtype=torch.float64, device="meta"), D, 0.1)
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor, numpy array or number; got "
                                        r"str"):
        sc.sparse_code("signal", D, 0.1)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"method": "admm"}, r"method must be one of 'closed_form', 'ista', 'fista', 'lca', "
                         r"'homotopy'; got 'admm'"),
    ({"max_iter": 0}, r"max_iter must be an integer >= 1; got 0"),
    ({"tol": -1.0}, r"tol must be a finite number > 0; got -1.0"),
    ({"step_size": float("nan")}, r"step_size must be a finite number > 0; got nan"),
    ({"init": np.zeros((3, 5))}, r"init must have the codes' shape \(3, 12\) for this x and "
                                 r"D; got shape \(3, 5\)"),
])
def test_bad_options(problem, kwargs, message: str) -> None:
    x, D = problem
    with pytest.raises(ValueError, match=message):
        sc.sparse_code(x, D, 0.1, **kwargs)


def test_dictionary_must_be_a_matrix_or_dictionary() -> None:
    with pytest.raises(ValueError, match=r"D must be a Dictionary or a 2-D matrix .* got tensor "
                                         r"of shape \(2, 1, 3, 3\).*wrap a 4-D filter bank"):
        sc.sparse_code(torch.ones(1, 9), torch.ones(2, 1, 3, 3), 0.1)


def test_unbounded_energy_is_reported_not_hidden() -> None:
    """A negative lam with a rank-deficient D makes the energy unbounded below: the codes grow
    without limit, and the solver says it did not converge instead of returning a 'solution'."""
    D = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    x = torch.ones(1, 1, dtype=torch.float64)
    with pytest.warns(sc.ConvergenceWarning, match=r"fista did not converge in max_iter=500"):
        result = sc.sparse_code(x, D, -1.0, nonneg=True, allow_negative_lam=True, max_iter=500)
    assert not result.converged
    assert torch.all(torch.isfinite(result.codes))
