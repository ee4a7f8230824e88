"""The step size of a sparse-coding layer: ``L = ||D||_2^2`` of its unit-norm dictionary.

``L`` is the Lipschitz constant of the data-term gradient ``D^T (D a - x)`` (THEORY.md A.8).  A
layer treats it as a constant: it is computed without gradient, in float64, and cached per
weight version and input size, so it is recomputed only after the weights change (an optimizer
step bumps the parameter's version counter) or a new input size arrives.

* Dense dictionaries: the exact spectral norm (``torch.linalg.matrix_norm(D, 2) ** 2``).
* Convolutional dictionaries: exact (spectral norm of the explicit matrix) when
  ``n_atoms * n_features <= EXPLICIT_LIMIT``; otherwise power iteration on
  ``D^T D = conv2d(conv_transpose2d(.))`` from a fixed seeded start (so ``L`` is a function
  of the weights alone and a resumed run reproduces it bit for bit).  The Rayleigh quotient
  approaches ``||D||_2^2`` from below; it stops when it changes by less than ``tol``
  relatively.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..dictionary import ConvDictionary

__all__ = ["EXPLICIT_LIMIT", "KnownLipschitzConvDictionary", "LipschitzCache", "conv_lipschitz",
           "dense_lipschitz"]

EXPLICIT_LIMIT = 1 << 22


class KnownLipschitzConvDictionary(ConvDictionary):
    """A :class:`ConvDictionary` whose ``L`` is already known (saves the engine's power
    iteration when the value was computed exactly)."""

    def __init__(self, weight: torch.Tensor, stride: tuple[int, int], padding: tuple[int, int],
                 lipschitz: float) -> None:
        super().__init__(weight, stride, padding)
        self._known_lipschitz = float(lipschitz)

    def lipschitz(self, signal_shape: Sequence[int] | None = None) -> float:
        return self._known_lipschitz


def dense_lipschitz(atoms: torch.Tensor) -> float:
    """``||D||_2^2`` for ``D`` with the rows of ``atoms`` as columns (exact, float64)."""
    with torch.no_grad():
        matrix = atoms.detach().to(torch.float64)
        return float(torch.linalg.matrix_norm(matrix, ord=2) ** 2)


def conv_lipschitz(atoms: torch.Tensor, stride: tuple[int, int], padding: tuple[int, int],
                   signal_shape: Sequence[int], start: torch.Tensor | None = None,
                   tol: float = 1e-10, max_iter: int = 2000, seed: int = 0
                   ) -> tuple[float, torch.Tensor | None]:
    """``||D||_2^2`` of the convolutional dictionary for signals ``(C, H, W)``; returns the value
    and the power iteration's leading vector (``None`` when computed exactly)."""
    with torch.no_grad():
        operator = ConvDictionary(atoms.detach().to(torch.float64), stride, padding)
        shape = tuple(int(s) for s in signal_shape)
        code_shape = (1, *operator.code_shape(shape))
        if math.prod(code_shape) * math.prod(shape) <= EXPLICIT_LIMIT:
            matrix = operator.to_matrix(shape)
            return float(torch.linalg.matrix_norm(matrix, ord=2) ** 2), None
        if start is None or tuple(start.shape) != code_shape:
            generator = torch.Generator().manual_seed(seed)
            start = torch.randn(code_shape, generator=generator, dtype=torch.float64)
        vector = start.to(device=operator.device, dtype=torch.float64)
        vector = vector / torch.linalg.vector_norm(vector)
        estimate, norm = 0.0, 0.0
        for _ in range(max_iter):
            image = operator.normal(vector, (1, *shape))
            new_estimate = float(torch.sum(vector * image))
            norm = float(torch.linalg.vector_norm(image))
            if norm == 0.0:
                return 0.0, vector
            vector = image / norm
            if abs(new_estimate - estimate) <= tol * abs(new_estimate):
                estimate = new_estimate
                break
            estimate = new_estimate
        return max(estimate, norm), vector


class LipschitzCache:
    """Cache of ``L`` keyed by (parameter identity and version, input size, dtype, device)."""

    def __init__(self) -> None:
        self._values: dict[tuple, float] = {}

    @staticmethod
    def key(parameters: Sequence[torch.Tensor], signal_shape: Sequence[int]) -> tuple:
        versions = [(p.data_ptr(), p._version, tuple(p.shape), p.dtype, str(p.device))
                    for p in parameters]
        return (*versions, tuple(int(s) for s in signal_shape))

    def conv(self, parameters: Sequence[torch.Tensor], atoms: torch.Tensor,
             stride: tuple[int, int], padding: tuple[int, int],
             signal_shape: Sequence[int]) -> float:
        key = self.key(parameters, signal_shape)
        if key not in self._values:
            if len(self._values) > 32:  # old weight versions are never asked for again
                self._values.clear()
            self._values[key], _ = conv_lipschitz(atoms, stride, padding, signal_shape)
        return self._values[key]

    def dense(self, parameters: Sequence[torch.Tensor], atoms: torch.Tensor) -> float:
        key = self.key(parameters, ())
        if key not in self._values:
            if len(self._values) > 32:
                self._values.clear()
            self._values[key] = dense_lipschitz(atoms)
        return self._values[key]
