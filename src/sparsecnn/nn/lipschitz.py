"""The step size of a sparse-coding layer: ``L = ||D||_2^2`` of its unit-norm dictionary.

``L`` is the Lipschitz constant of the data-term gradient ``D^T (D a - x)`` (docs/theory.md A.8).  A
layer treats it as a constant: it is computed without gradient, in float64, and cached per
weight *values* and input size.  The cache keeps a copy of the weights it saw and compares it
(``torch.equal``, one pass over the weights, cheap next to a forward pass) on every lookup:
a parameter's ``_version`` counter does not move under ``weight.data.copy_(...)`` or
``load_state_dict`` of a ``.data`` alias, so a key on ``(data_ptr, _version)`` alone returned
the constant of weights it had never seen.

``L`` depends on the input size (a convolutional dictionary of a larger image has more atoms and
a norm at least as large), and on which of two methods computes it:

* Dense dictionaries: the exact spectral norm.
* Convolutional dictionaries: exact when ``n_atoms * n_features <= EXPLICIT_LIMIT`` (the
  largest eigenvalue of the smaller Gram matrix of the explicit matrix; :func:`conv_lipschitz`
  with ``method="exact"``); otherwise a rigorous upper bound from the polyphase frequency
  response of the filters (:func:`fourier_lipschitz_bound`, ``method="fourier"``), which is
  deterministic (``L`` is a function of the weights alone, so a resumed run reproduces it
  bit for bit), costs a few FFTs instead of hundreds of convolutions, and is tight for large
  images.  :func:`lipschitz_method` says which one a layer uses for an input size, so codes
  can change slightly when the image size crosses the limit.  Power iteration (the engine's
  choice) approaches ``||D||_2^2`` from below and needs many convolutions per weight update,
  too slow to repeat at every training step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..dictionary import ConvDictionary, fourier_lipschitz_bound

__all__ = ["EXPLICIT_LIMIT", "KnownLipschitzConvDictionary", "LipschitzCache", "conv_lipschitz",
           "dense_lipschitz", "explicit_synthesis_matrix", "fourier_lipschitz_bound",
           "lipschitz_method"]

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


def _largest_gram_eigenvalue(matrix: torch.Tensor) -> float:
    """``||M||_2^2`` as the largest eigenvalue of the smaller Gram matrix (``M^T M`` or
    ``M M^T``): a symmetric eigenproblem of the smaller size, about 3x faster than the SVD of
    ``M`` for the tall explicit matrices of convolutional layers, equal to it in float64 to
    rounding."""
    gram = matrix.T @ matrix if matrix.shape[1] <= matrix.shape[0] else matrix @ matrix.T
    return float(torch.linalg.eigvalsh(gram)[-1])


def explicit_synthesis_matrix(atoms: torch.Tensor, stride: tuple[int, int],
                              padding: tuple[int, int], signal_shape: Sequence[int]
                              ) -> torch.Tensor:
    """The matrix ``(C*H*W, K*H_out*W_out)`` of :meth:`ConvDictionary.to_matrix` (atom ``(k,
    p)`` = filter ``k`` placed at output position ``p``, cropped by the padding), built by
    copying the filters into place: ``to_matrix`` synthesises one impulse per atom, a dense
    convolution as costly as the Gram product that follows (about half of ``L``'s cost for
    the 512-filter layer of the ML-ISTA benchmark)."""
    n_filters, channels, kh, kw = atoms.shape
    height, width = (int(s) for s in signal_shape[-2:])
    (sh, sw), (ph, pw) = stride, padding
    out_h = (height + 2 * ph - kh) // sh + 1
    out_w = (width + 2 * pw - kw) // sw + 1
    placed = atoms.new_zeros((n_filters, out_h, out_w, channels, height + 2 * ph,
                              width + 2 * pw))
    for i in range(out_h):
        for j in range(out_w):
            placed[:, i, j, :, i * sh:i * sh + kh, j * sw:j * sw + kw] = atoms
    cropped = placed[..., ph:ph + height, pw:pw + width]
    return cropped.reshape(n_filters * out_h * out_w, -1).T


def dense_lipschitz(atoms: torch.Tensor) -> float:
    """``||D||_2^2`` for ``D`` with the rows of ``atoms`` as columns (exact, float64)."""
    with torch.no_grad():
        return _largest_gram_eigenvalue(atoms.detach().to(torch.float64))


def lipschitz_method(atoms_shape: Sequence[int], stride: tuple[int, int],
                     padding: tuple[int, int], signal_shape: Sequence[int]) -> str:
    """``"exact"`` or ``"fourier"``: how :func:`conv_lipschitz` computes ``L`` for filters of
    shape ``atoms_shape`` and signals ``(C, H, W)`` (module docstring)."""
    n_filters, _, kh, kw = (int(s) for s in atoms_shape)
    channels, height, width = (int(s) for s in signal_shape)
    out_h = (height + 2 * padding[0] - kh) // stride[0] + 1
    out_w = (width + 2 * padding[1] - kw) // stride[1] + 1
    size = n_filters * out_h * out_w * channels * height * width
    return "exact" if size <= EXPLICIT_LIMIT else "fourier"


def conv_lipschitz(atoms: torch.Tensor, stride: tuple[int, int], padding: tuple[int, int],
                   signal_shape: Sequence[int], method: str | None = None) -> float:
    """``L`` for the convolutional dictionary and signals ``(C, H, W)``: exactly
    (``||D||_2^2`` of the explicit matrix) when ``n_atoms * n_features <= EXPLICIT_LIMIT``,
    otherwise the upper bound :func:`fourier_lipschitz_bound` (a step ``1/L`` with ``L`` above
    ``||D||_2^2`` keeps ISTA monotone and convergent).  ``method`` (``"exact"`` or
    ``"fourier"``) overrides the choice by size."""
    # the dictionary's own check: a kernel larger than the (padded) signal is a clear error,
    # not a negative dimension in the explicit matrix
    shape = ConvDictionary(atoms.detach(), stride, padding).check_signal_shape(signal_shape)
    shape = shape[-3:] if len(shape) >= 3 else (atoms.shape[1], *shape)
    if method is None:
        method = lipschitz_method(atoms.shape, stride, padding, shape)
    if method not in ("exact", "fourier"):
        raise ValueError(f"method must be 'exact', 'fourier' or None; got {method!r}")
    with torch.no_grad():
        if method == "fourier":
            return fourier_lipschitz_bound(atoms, stride, padding, shape)
        return _largest_gram_eigenvalue(explicit_synthesis_matrix(
            atoms.detach().to(torch.float64), stride, padding, shape))


class LipschitzCache:
    """Cache of ``L`` per weight values and input size.

    An entry holds a copy of the parameters it was computed from and is returned only while the
    parameters are equal to that copy (``torch.equal``: exact, one pass).  Only the newest
    weights are kept per input size: old weight values are never asked for again in training.
    """

    def __init__(self) -> None:
        self._values: dict[tuple, tuple[list[torch.Tensor], float]] = {}

    @staticmethod
    def key(parameters: Sequence[torch.Tensor], signal_shape: Sequence[int]) -> tuple:
        layout = [(tuple(p.shape), p.dtype, str(p.device)) for p in parameters]
        return (*layout, tuple(int(s) for s in signal_shape))

    def _lookup(self, parameters: Sequence[torch.Tensor], signal_shape: Sequence[int],
                compute: Callable[[], float]) -> float:
        key = self.key(parameters, signal_shape)
        entry = self._values.get(key)
        if entry is not None and all(torch.equal(p.detach(), seen) for p, seen in
                                     zip(parameters, entry[0], strict=True)):
            return entry[1]
        if len(self._values) > 32:  # input sizes come and go; bound the memory
            self._values.clear()
        with torch.no_grad():
            snapshot = [p.detach().clone() for p in parameters]
            value = compute()
        self._values[key] = (snapshot, value)
        return value

    def conv(self, parameters: Sequence[torch.Tensor], atoms: Callable[[], torch.Tensor],
             stride: tuple[int, int], padding: tuple[int, int],
             signal_shape: Sequence[int]) -> float:
        """``L`` for the current weights; ``atoms()`` is evaluated (without gradient) only on a
        cache miss."""
        return self._lookup(parameters, signal_shape,
                            lambda: conv_lipschitz(atoms(), stride, padding, signal_shape))

    def dense(self, parameters: Sequence[torch.Tensor], atoms: Callable[[], torch.Tensor]
              ) -> float:
        return self._lookup(parameters, (), lambda: dense_lipschitz(atoms()))
