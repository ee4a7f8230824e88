"""Helpers shared by test modules (importable as ``helpers``: ``tests/`` is on ``sys.path``
because pytest's rootdir-relative import inserts the first directory without an
``__init__.py``).  Fixtures stay in ``conftest.py``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from hypothesis import strategies as st


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
    with n = n_features here, so alpha = lam / n_features gives our minimiser.  ``lam = 0``
    (Lasso is not meant for alpha = 0): least squares, non-negative with ``nonneg``."""
    from scipy.optimize import nnls
    from sklearn.linear_model import Lasso

    if lam == 0:
        if nonneg:
            return np.stack([nnls(D, row)[0] for row in x])
        return np.linalg.lstsq(D, x.T, rcond=None)[0].T
    model = Lasso(alpha=lam / D.shape[0], fit_intercept=False, positive=nonneg, tol=tol,
                  max_iter=1_000_000)
    return np.stack([model.fit(D, row).coef_.copy() for row in x])


# small dense problems for property tests: (n_features, n_atoms, batch, lam, seed)
small_dense_problems = st.tuples(
    st.integers(2, 8),       # n_features
    st.integers(1, 12),      # n_atoms
    st.integers(1, 3),       # batch
    st.floats(0.0, 2.0),     # lam
    st.integers(0, 2**31 - 1),
)


def draw_dense_problem(n_features: int, n_atoms: int, batch: int, seed: int
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm Gaussian atoms ``(n_features, n_atoms)`` and signals ``2 N(0, I)``."""
    generator = torch.Generator().manual_seed(seed)
    D = torch.randn(n_features, n_atoms, generator=generator, dtype=torch.float64)
    D = D / torch.linalg.vector_norm(D, dim=0)
    x = torch.randn(batch, n_features, generator=generator, dtype=torch.float64) * 2
    return D, x


def quick_study_run(directory: Path, study: str, seed: int) -> Path:
    """``sparsecnn reproduce --quick --only study`` into ``directory / study``; the output."""
    from click.testing import CliRunner

    from sparsecnn.cli import cli

    out = directory / study
    result = CliRunner().invoke(cli, ["reproduce", "--quick", "--only", study, "--out",
                                      str(out), "--seed", str(seed)])
    assert result.exit_code == 0, result.output
    return out
