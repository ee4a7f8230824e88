"""The step size of a sparse-coding layer: ``L = ||D||_2^2`` of its unit-norm dictionary.

``L`` is the Lipschitz constant of the data-term gradient ``D^T (D a - x)`` (docs/theory.md A.8).  A
layer treats it as a constant: it is computed without gradient, in float64, and cached per
weight version and input size, so it is recomputed only after the weights change (an optimizer
step bumps the parameter's version counter) or a new input size arrives.

* Dense dictionaries: the exact spectral norm (``torch.linalg.matrix_norm(D, 2) ** 2``).
* Convolutional dictionaries: exact (spectral norm of the explicit matrix) when
  ``n_atoms * n_features <= EXPLICIT_LIMIT``; otherwise a rigorous upper bound from the
  polyphase frequency response of the filters (:func:`fourier_lipschitz_bound`), which is
  deterministic (``L`` is a function of the weights alone, so a resumed run reproduces it
  bit for bit), costs a few FFTs instead of hundreds of convolutions, and is tight for large
  images.  Power iteration (the engine's choice) approaches ``||D||_2^2`` from below and needs
  many convolutions per weight update, too slow to repeat at every training step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from ..dictionary import ConvDictionary, fourier_lipschitz_bound

__all__ = ["EXPLICIT_LIMIT", "KnownLipschitzConvDictionary", "LipschitzCache", "conv_lipschitz",
           "dense_lipschitz", "fourier_lipschitz_bound"]

EXPLICIT_LIMIT = 1 << 20


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
                   signal_shape: Sequence[int]) -> float:
    """``L`` for the convolutional dictionary and signals ``(C, H, W)``: exactly
    (``||D||_2^2`` of the explicit matrix) when ``n_atoms * n_features <= EXPLICIT_LIMIT``,
    otherwise the upper bound :func:`fourier_lipschitz_bound` (a step ``1/L`` with ``L`` above
    ``||D||_2^2`` keeps ISTA monotone and convergent)."""
    with torch.no_grad():
        operator = ConvDictionary(atoms.detach().to(torch.float64), stride, padding)
        shape = tuple(int(s) for s in signal_shape)
        code_shape = operator.code_shape(shape)
        if math.prod(code_shape) * math.prod(shape) <= EXPLICIT_LIMIT:
            matrix = operator.to_matrix(shape)
            return float(torch.linalg.matrix_norm(matrix, ord=2) ** 2)
        return fourier_lipschitz_bound(atoms, stride, padding, shape)


class LipschitzCache:
    """Cache of ``L`` keyed by (parameter identity and version, input size, dtype, device)."""

    def __init__(self) -> None:
        self._values: dict[tuple, float] = {}

    @staticmethod
    def key(parameters: Sequence[torch.Tensor], signal_shape: Sequence[int]) -> tuple:
        versions = [(p.data_ptr(), p._version, tuple(p.shape), p.dtype, str(p.device))
                    for p in parameters]
        return (*versions, tuple(int(s) for s in signal_shape))

    def conv(self, parameters: Sequence[torch.Tensor], atoms: Callable[[], torch.Tensor],
             stride: tuple[int, int], padding: tuple[int, int],
             signal_shape: Sequence[int]) -> float:
        """``L`` for the current weights; ``atoms()`` is evaluated (without gradient) only on a
        cache miss."""
        key = self.key(parameters, signal_shape)
        if key not in self._values:
            if len(self._values) > 32:  # old weight versions are never asked for again
                self._values.clear()
            with torch.no_grad():
                self._values[key] = conv_lipschitz(atoms(), stride, padding, signal_shape)
        return self._values[key]

    def dense(self, parameters: Sequence[torch.Tensor], atoms: Callable[[], torch.Tensor]
              ) -> float:
        key = self.key(parameters, ())
        if key not in self._values:
            if len(self._values) > 32:
                self._values.clear()
            with torch.no_grad():
                self._values[key] = dense_lipschitz(atoms())
        return self._values[key]
