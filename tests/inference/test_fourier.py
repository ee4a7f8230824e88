"""Circular FFT-domain convolutional sparse coding against an explicit circulant dictionary."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import Lasso

import sparsecnn as sc
from sparsecnn.inference.fourier import (
    CircularConvOperator,
    circular_energy,
    circular_sparse_code,
)


def _circulant_matrix(filters: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Columns = every filter (K, C, kh, kw) circularly shifted to every position (k, i, j),
    written with np.roll: atom(k, i, j)[c, u, v] = f_k[c, (u - i) mod H, (v - j) mod W]."""
    n_filters, channels, kh, kw = filters.shape
    height, width = size
    columns = []
    for k in range(n_filters):
        padded = np.zeros((channels, height, width))
        padded[:, :kh, :kw] = filters[k]
        for i in range(height):
            for j in range(width):
                columns.append(np.roll(np.roll(padded, i, axis=1), j, axis=2).ravel())
    return np.stack(columns, axis=1)


def _setup(seed: int, channels: int = 1):
    rng = np.random.default_rng(seed)
    filters = rng.standard_normal((3, channels, 3, 3))
    filters /= np.linalg.norm(filters.reshape(3, -1), axis=1)[:, None, None, None]
    images = rng.standard_normal((2, channels, 6, 7))
    return filters, images


@pytest.mark.parametrize("channels", [1, 2])
def test_operator_matches_circulant_matrix_and_is_adjoint(channels: int) -> None:
    filters, images = _setup(0, channels)
    matrix = _circulant_matrix(filters, (6, 7))
    operator = CircularConvOperator(torch.tensor(filters), (6, 7))
    codes = np.random.default_rng(1).standard_normal((2, 3, 6, 7))
    synthesis = operator.synthesis(torch.tensor(codes)).numpy().reshape(2, -1)
    np.testing.assert_allclose(synthesis, codes.reshape(2, -1) @ matrix.T, atol=1e-12)
    analysis = operator.analysis(torch.tensor(images)).numpy().reshape(2, -1)
    np.testing.assert_allclose(analysis, images.reshape(2, -1) @ matrix, atol=1e-12)
    largest = np.linalg.norm(matrix, 2) ** 2
    assert operator.lipschitz() == pytest.approx(largest, rel=1e-12)


@pytest.mark.parametrize("nonneg", [False, True])
@pytest.mark.parametrize("channels", [1, 2])
def test_circular_codes_match_sklearn_lasso(nonneg: bool, channels: int) -> None:
    filters, images = _setup(2, channels)
    matrix = _circulant_matrix(filters, (6, 7))
    lam = 0.4
    model = Lasso(alpha=lam / matrix.shape[0], fit_intercept=False, positive=nonneg,
                  tol=1e-14, max_iter=500_000)
    reference = np.stack([model.fit(matrix, image.ravel()).coef_.copy() for image in images])
    result = circular_sparse_code(torch.tensor(images), torch.tensor(filters), lam,
                                  nonneg=nonneg, tol=1e-11, max_iter=100_000)
    assert result.converged and result.codes.shape == (2, 3, 6, 7)
    np.testing.assert_allclose(result.codes.numpy().reshape(2, -1), reference, atol=1e-7)
    explicit = 0.5 * ((images.reshape(2, -1) - reference @ matrix.T) ** 2).sum(1) + \
        lam * np.abs(reference).sum(1)
    np.testing.assert_allclose(result.energy.numpy(), explicit, rtol=1e-9)
    energy = circular_energy(images, filters, result.codes.numpy(), lam, nonneg=nonneg)
    np.testing.assert_allclose(energy, explicit, rtol=1e-9)


@pytest.mark.parametrize("check_every", [1, 5])
def test_stopping_rule_holds_at_return(check_every: int) -> None:
    filters, images = _setup(5)
    result = circular_sparse_code(torch.tensor(images), torch.tensor(filters), 0.2, tol=1e-8,
                                  max_iter=100_000, check_every=check_every)
    assert result.converged and float(result.optimality_gap.max()) <= 1e-8
    with pytest.raises(ValueError, match=r"check_every"):
        circular_sparse_code(torch.tensor(images), torch.tensor(filters), 0.2, check_every=0)


def test_float32_agrees_with_float64() -> None:
    filters, images = _setup(3)
    double = circular_sparse_code(torch.tensor(images), torch.tensor(filters), 0.3, tol=1e-10,
                                  max_iter=100_000)
    single = circular_sparse_code(torch.tensor(images, dtype=torch.float32),
                                  torch.tensor(filters, dtype=torch.float32), 0.3, tol=1e-6,
                                  max_iter=100_000)
    # the problem is 3x overcomplete (ill-conditioned): compare energies tightly, codes loosely
    np.testing.assert_allclose(single.energy.double().numpy(), double.energy.numpy(), rtol=1e-5)
    np.testing.assert_allclose(single.codes.double().numpy(), double.codes.numpy(), atol=2e-3)


def test_bad_inputs_are_named() -> None:
    filters, images = _setup(4)
    x, f = torch.tensor(images), torch.tensor(filters)
    with pytest.raises(ValueError, match=r"must not require grad"):
        circular_sparse_code(x.requires_grad_(True), f, 0.1)
    with pytest.raises(ValueError, match=r"lam must be >= 0 .* got minimum -0.1"):
        circular_sparse_code(torch.tensor(images), f, -0.1)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 1, H, W\)"):
        circular_sparse_code(torch.tensor(images[:, 0]), f, 0.1)
    with pytest.raises(ValueError, match=r"lam must be a scalar, one value per filter \(3\)"):
        circular_sparse_code(torch.tensor(images), f, torch.ones(5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"zero-norm filter"):
        circular_sparse_code(torch.tensor(images), torch.zeros_like(f), 0.1)


@pytest.mark.parametrize("nonneg", [False, True])
def test_public_circular_sparse_code_is_sparse_code_on_the_circulant_matrix(
        nonneg: bool) -> None:
    """``sparsecnn.circular_sparse_code`` with one threshold per filter solves the problem
    that the exact homotopy path of ``sparse_code`` solves on the explicit circulant
    dictionary (np.roll columns) with that threshold on every position of the filter's map;
    numpy in, numpy out."""
    filters, images = _setup(5, channels=2)
    matrix = _circulant_matrix(filters, (6, 7))
    lam = np.array([0.3, 0.5, 0.2])
    result = sc.circular_sparse_code(images, filters, lam, nonneg=nonneg, tol=1e-12,
                                     max_iter=200_000)
    assert isinstance(result.codes, np.ndarray) and result.converged
    per_atom = np.repeat(lam, 6 * 7)  # columns are ordered (filter, row, column)
    exact = sc.sparse_code(images.reshape(2, -1), matrix, per_atom, method="homotopy",
                           nonneg=nonneg)
    assert exact.converged
    np.testing.assert_allclose(result.codes.reshape(2, -1), exact.codes, atol=1e-8)
    np.testing.assert_allclose(result.energy, exact.energy, rtol=1e-10)
    assert sc.circular_sparse_code is sc.inference.circular_sparse_code
