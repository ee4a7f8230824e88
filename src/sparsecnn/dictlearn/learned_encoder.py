"""Learned ISTA (LISTA; Gregor & LeCun 2010, ICML; docs/theory.md C8, check 26).

ISTA from ``a^0 = 0`` with step ``1/L`` (``L = ||D||_2^2``) is

    a^{t+1} = h_theta( W_e x + S a^t ),   W_e = D^T / L,  S = I - D^T D / L,  theta = lam / L,

with ``h_theta`` the soft threshold (or ``relu(. - theta)`` for non-negative codes).  LISTA
keeps this ``T``-layer form but learns ``W_e``, ``S`` and ``theta`` to regress the exact LASSO
codes.  :class:`LearnedISTA` starts at the ISTA values, so before training it *is* ``T``
steps of ISTA (:func:`ista_encoder`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._checks import (
    as_matrix,
    as_tensor,
    check_positive_float,
    check_positive_int,
)
from ..dictionary import DenseDictionary

__all__ = ["LearnedISTA", "ista_encoder"]


class LearnedISTA(nn.Module):
    """``T`` unrolled ISTA layers with learnable ``W_e`` ``(m, n)``, ``S`` ``(m, m)`` and
    per-atom thresholds ``theta`` ``(m,)``, initialised from the dictionary ``D`` ``(n, m)``
    and ``lam`` (module docstring)."""

    def __init__(self, dictionary: Any, lam: float, n_layers: int = 3, *,
                 nonneg: bool = False) -> None:
        super().__init__()
        matrix = as_matrix(dictionary, "dictionary", axes="(n_features, n_atoms)")
        lam = check_positive_float(lam, "lam", allow_zero=True)
        self.n_layers = check_positive_int(n_layers, "n_layers")
        self.nonneg = bool(nonneg)
        matrix = matrix.detach()
        lipschitz = DenseDictionary(matrix).lipschitz()
        n_atoms = matrix.shape[1]
        self.encoder = nn.Parameter(matrix.T / lipschitz)
        self.mutual_inhibition = nn.Parameter(
            torch.eye(n_atoms, dtype=matrix.dtype) - matrix.T @ matrix / lipschitz)
        self.threshold = nn.Parameter(torch.full((n_atoms,), lam / lipschitz,
                                                 dtype=matrix.dtype))

    def _shrink(self, values: torch.Tensor) -> torch.Tensor:
        if self.nonneg:
            return torch.relu(values - self.threshold)
        return torch.relu(values - self.threshold) - torch.relu(-values - self.threshold)

    def forward(self, signals: torch.Tensor) -> torch.Tensor:
        if signals.ndim != 2 or signals.shape[1] != self.encoder.shape[1]:
            raise ValueError(f"signals must have shape (batch, {self.encoder.shape[1]}); got "
                             f"{tuple(signals.shape)}")
        drive = signals @ self.encoder.T
        codes = self._shrink(drive)
        for _ in range(self.n_layers - 1):
            codes = self._shrink(drive + codes @ self.mutual_inhibition.T)
        return codes


def ista_encoder(signals: Any, dictionary: Any, lam: float, n_steps: int, *,
                 nonneg: bool = False) -> torch.Tensor:
    """``n_steps`` of ISTA from zero with step ``1/L``: an untrained :class:`LearnedISTA`."""
    x, _ = as_tensor(signals, "signals")
    model = LearnedISTA(dictionary, lam, n_steps, nonneg=nonneg).to(x.dtype)
    with torch.no_grad():
        return model(x)
