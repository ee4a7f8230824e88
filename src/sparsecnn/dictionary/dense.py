"""Explicit dictionaries ``D`` of shape ``(n_features, n_atoms)`` (docs/theory.md A.1-A.3)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .._checks import as_tensor, describe
from .base import Dictionary


class DenseDictionary(Dictionary):
    """Explicit dictionary ``D`` of shape ``(n_features, n_atoms)``; columns are atoms.

    Signals are ``(batch, n_features)``, codes ``(batch, n_atoms)``; analysis is ``x @ D`` and
    synthesis ``a @ D.T``.  The matrix is kept as given (not copied), so gradients flow to it.
    """

    def __init__(self, matrix: Any) -> None:
        super().__init__()
        tensor, _ = as_tensor(matrix, "matrix")
        if tensor.ndim != 2:
            raise ValueError(
                f"matrix must be 2-D (n_features, n_atoms); got {describe(tensor)}")
        if min(tensor.shape) == 0:
            raise ValueError(f"matrix must have at least one row and one atom; got "
                             f"{describe(tensor)}")
        self.matrix = tensor

    def __repr__(self) -> str:
        return f"DenseDictionary(n_features={self.n_features}, n_atoms={self.n_atoms}, " \
               f"dtype={self.dtype})"

    @property
    def weight(self) -> torch.Tensor:
        return self.matrix

    @property
    def n_features(self) -> int:
        return self.matrix.shape[0]

    @property
    def n_atoms(self) -> int:
        return self.matrix.shape[1]

    def analysis(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.matrix

    def synthesis(self, codes: torch.Tensor, signal_shape: Sequence[int] | None = None
                  ) -> torch.Tensor:
        return codes @ self.matrix.T

    def gram(self) -> torch.Tensor:
        """``D^T D`` as an explicit ``(n_atoms, n_atoms)`` matrix."""
        return self.matrix.T @ self.matrix

    def code_shape(self, signal_shape: Sequence[int]) -> tuple[int, ...]:
        return (self.n_atoms,)

    def _default_signal_shape(self) -> tuple[int, ...]:
        return (self.n_features,)

    def check_signal(self, x: torch.Tensor, name: str = "x") -> None:
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(
                f"{name} must have shape (batch, {self.n_features}) to match the dictionary's "
                f"n_features={self.n_features}; got shape {tuple(x.shape)}")

    def atom_norms(self) -> torch.Tensor:
        return torch.linalg.vector_norm(self.matrix, dim=0)

    def normalized(self) -> DenseDictionary:
        self.check_atoms("matrix")
        return DenseDictionary(self.matrix / self.atom_norms())

    def _float64(self) -> DenseDictionary:
        return DenseDictionary(self.matrix.detach().to(torch.float64))

    def astype(self, dtype: torch.dtype) -> DenseDictionary:
        return DenseDictionary(self.matrix.to(dtype))

    def coherence(self) -> float:
        if self.n_atoms < 2:
            return 0.0
        self.check_atoms("matrix")
        unit = self._float64().normalized().matrix
        gram = (unit.T @ unit).abs()
        gram.fill_diagonal_(0.0)
        return float(gram.max())

    def orthogonality_gap(self, signal_shape: Sequence[int] | None = None) -> float:
        matrix = self._float64().matrix
        identity = torch.eye(self.n_atoms, dtype=torch.float64, device=matrix.device)
        return float(torch.linalg.matrix_norm(matrix.T @ matrix - identity))

    def to_matrix(self) -> torch.Tensor:
        return self.matrix
