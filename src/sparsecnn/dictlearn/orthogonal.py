"""Orthogonal dictionary learning: the exact-orthogonal regime (docs/theory.md A.2, A.3).

With ``D^T D = I`` (square ``D``), the sparse-coding energy separates and the one-shot
threshold is the exact code: ``A = S_lam(D^T X)`` (signed) or ``relu(D^T X - lam)``
(non-negative).  For fixed codes the best orthogonal dictionary solves the orthogonal
Procrustes problem

    min_{D^T D = I} ||X - D A||_F^2   =>   D = U V^T,  where  X A^T = U Sigma V^T

(Schoenemann 1966).  Alternating the two exact minimisations never increases the energy
``1/2 ||X - D A||_F^2 + lam sum |A|``, and ``D`` stays exactly orthogonal (up to rounding).
Here signals are rows: ``X`` is ``(n_signals, n)``, codes ``(n_signals, n)``, and
``X^T A`` is the cross-covariance whose SVD gives the step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .._checks import (
    as_matrix,
    as_tensor,
    check_finite,
    check_positive_float,
    check_positive_int,
)

__all__ = ["OrthogonalDictionaryResult", "learn_orthogonal_dictionary", "procrustes"]


@dataclass
class OrthogonalDictionaryResult:
    """Orthogonal dictionary ``(n, n)`` (columns are atoms), the codes of the training
    signals and the total energy after every alternation (non-increasing)."""

    dictionary: torch.Tensor
    codes: torch.Tensor
    energy_history: list[float] = field(default_factory=list)


def procrustes(signals: Any, codes: Any) -> torch.Tensor:
    """``argmin_{D^T D = I} ||X - A D^T||_F`` for signals ``X`` and codes ``A`` given as rows
    ``(n_signals, n)``: ``D = U V^T`` from the SVD ``X^T A = U Sigma V^T``."""
    x, _ = as_tensor(signals, "signals")
    a, _ = as_tensor(codes, "codes", dtype=x.dtype)
    if x.ndim != 2 or a.ndim != 2 or x.shape != a.shape:
        raise ValueError(f"signals and codes must be 2-D with the same shape (n_signals, n) "
                         f"(a square dictionary); got {tuple(x.shape)} and {tuple(a.shape)}")
    check_finite(x, "signals")
    check_finite(a, "codes")
    u, _, vh = torch.linalg.svd(x.T @ a)
    return u @ vh


def _threshold(values: torch.Tensor, lam: float, nonneg: bool) -> torch.Tensor:
    if nonneg:
        return torch.relu(values - lam)
    return torch.relu(values - lam) - torch.relu(-values - lam)


def _energy(x: torch.Tensor, dictionary: torch.Tensor, codes: torch.Tensor, lam: float
            ) -> float:
    residual = x - codes @ dictionary.T
    return float(0.5 * (residual ** 2).sum() + lam * codes.abs().sum())


def learn_orthogonal_dictionary(signals: Any, lam: float, *, nonneg: bool = False,
                                n_iter: int = 50, seed: int = 0, init: Any = None
                                ) -> OrthogonalDictionaryResult:
    """Alternate exact codes ``A = T_lam(X D)`` and the Procrustes step ``D = procrustes(X, A)``
    for ``n_iter`` rounds; ``D`` starts from ``init`` (orthogonalised by QR) or from the QR
    factor of a seeded Gaussian matrix."""
    x = as_matrix(signals, "signals", axes="(n_signals, n_features)")
    lam = check_positive_float(lam, "lam", allow_zero=True)
    n_iter = check_positive_int(n_iter, "n_iter")
    n = x.shape[1]
    if init is None:
        generator = torch.Generator().manual_seed(int(seed))
        start = torch.randn((n, n), generator=generator, dtype=torch.float64).to(x.dtype)
    else:
        start, _ = as_tensor(init, "init", dtype=x.dtype)
        if tuple(start.shape) != (n, n):
            raise ValueError(f"init must be square ({n}, {n}); got {tuple(start.shape)}")
    dictionary, _ = torch.linalg.qr(start)
    history = []
    codes = _threshold(x @ dictionary, lam, nonneg)
    for _ in range(n_iter):
        codes = _threshold(x @ dictionary, lam, nonneg)
        history.append(_energy(x, dictionary, codes, lam))
        dictionary = procrustes(x, codes)
        history.append(_energy(x, dictionary, codes, lam))
    codes = _threshold(x @ dictionary, lam, nonneg)
    return OrthogonalDictionaryResult(dictionary=dictionary, codes=codes,
                                      energy_history=history)
