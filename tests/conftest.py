"""Shared fixtures: THEORY.md Part D defaults (float64, D = Q of a 64x64 Gaussian matrix)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import settings

settings.register_profile("sparsecnn", deadline=None, max_examples=40, derandomize=True)
settings.load_profile("sparsecnn")
torch.set_num_threads(int(os.environ.get("SPARSECNN_TEST_THREADS", "1")))


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def orthonormal_dictionary(generator: torch.Generator) -> torch.Tensor:
    """THEORY.md Part D: Q from the QR decomposition of a 64x64 standard-normal matrix."""
    q, _ = torch.linalg.qr(torch.randn(64, 64, generator=generator, dtype=torch.float64))
    return q


@pytest.fixture
def overcomplete_dictionary(generator: torch.Generator) -> torch.Tensor:
    """64 x 128 Gaussian dictionary with unit-norm columns."""
    matrix = torch.randn(64, 128, generator=generator, dtype=torch.float64)
    return matrix / torch.linalg.vector_norm(matrix, dim=0)


@pytest.fixture
def signals(generator: torch.Generator) -> torch.Tensor:
    """A batch of x ~ N(0, I_64)."""
    return torch.randn(6, 64, generator=generator, dtype=torch.float64)


def haar_filters(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The orthonormal 2x2 Haar bank: average, horizontal, vertical and diagonal detail."""
    bank = np.array([
        [[1, 1], [1, 1]],
        [[1, 1], [-1, -1]],
        [[1, -1], [1, -1]],
        [[1, -1], [-1, 1]],
    ], dtype=np.float64) / 2.0
    return torch.tensor(bank, dtype=dtype).unsqueeze(1)


def random_batch_problem(seed: int, n_signals: int, n_features: int, n_atoms: int,
                         zero_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Signals ``(n_signals, n_features)`` and unit-norm atoms ``(n_features, n_atoms)``;
    the first ``zero_fraction`` of the signals are scaled by 0.01 (all-zero solution)."""
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((n_features, n_atoms))
    D /= np.linalg.norm(D, axis=0)
    x = rng.standard_normal((n_signals, n_features))
    x[: int(n_signals * zero_fraction)] *= 0.01
    return x, D


def sklearn_lasso_codes(x: np.ndarray, D: np.ndarray, lam: float, nonneg: bool,
                        tol: float = 1e-14) -> np.ndarray:
    """scikit-learn's Lasso per signal: it minimises 1/(2 n) ||y - X w||^2 + alpha ||w||_1
    with n = n_features here, so alpha = lam / n_features gives our minimiser."""
    from sklearn.linear_model import Lasso

    model = Lasso(alpha=lam / D.shape[0], fit_intercept=False, positive=nonneg, tol=tol,
                  max_iter=1_000_000)
    return np.stack([model.fit(D, row).coef_.copy() for row in x])
