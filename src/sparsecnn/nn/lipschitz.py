"""The step size of a sparse-coding layer: ``L = ||D||_2^2`` of its unit-norm dictionary.

``L`` is the Lipschitz constant of the data-term gradient ``D^T (D a - x)`` (THEORY.md A.8).  A
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

from ..dictionary import ConvDictionary

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


def fourier_lipschitz_bound(atoms: torch.Tensor, stride: tuple[int, int],
                            padding: tuple[int, int], signal_shape: Sequence[int]) -> float:
    """An upper bound on ``||D||_2^2`` from the filters' frequency responses.

    Split the (padded) image into its ``s_h * s_w`` polyphase components; the strided
    correlation ``D^T x`` is then a stride-1 correlation of ``C s_h s_w`` channels with the
    polyphase filters ``P[k, (c, u, v), i, j] = W[k, c, s_h i + u, s_w j + v]``.  The finite
    operator (zero boundary) is a submatrix of the circular one on a grid of
    ``H_out + ceil(kh / s_h) - 1`` by ``W_out + ceil(kw / s_w) - 1`` points, whose norm is the
    largest singular value of ``P_hat(omega)`` (a ``K x C s^2`` matrix) over that grid.  So
    ``L <= max_omega lambda_max(P_hat(omega)^H P_hat(omega))``, tight for large images.
    """
    with torch.no_grad():
        weight = atoms.detach().to(torch.float64)
        n_filters, channels, kh, kw = weight.shape
        sh, sw = stride
        ph, pw = math.ceil(kh / sh), math.ceil(kw / sw)
        polyphase = torch.zeros((n_filters, channels, sh, sw, ph, pw), dtype=torch.float64,
                                device=weight.device)
        for u in range(sh):
            for v in range(sw):
                part = weight[:, :, u::sh, v::sw]
                polyphase[:, :, u, v, :part.shape[2], :part.shape[3]] = part
        polyphase = polyphase.reshape(n_filters, channels * sh * sw, ph, pw)
        operator = ConvDictionary(weight, stride, padding)
        _, out_h, out_w = operator.code_shape(tuple(signal_shape))
        response = torch.fft.fft2(polyphase, s=(out_h + ph - 1, out_w + pw - 1))
        response = response.permute(2, 3, 0, 1)  # (freq_h, freq_w, K, C s^2)
        if response.shape[-1] <= response.shape[-2]:
            gram = response.conj().transpose(-1, -2) @ response
        else:
            gram = response @ response.conj().transpose(-1, -2)
        return float(torch.linalg.eigvalsh(gram)[..., -1].max())


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
