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

import math
from collections.abc import Callable, Sequence

import torch

from ..dictionary import ConvDictionary, fourier_lipschitz_bound

__all__ = [
    "EXPLICIT_LIMIT",
    "GRID_RATIO",
    "KnownLipschitzConvDictionary",
    "LipschitzCache",
    "conv_lipschitz",
    "dense_lipschitz",
    "explicit_synthesis_matrix",
    "fourier_lipschitz_bound",
    "grid_index",
    "grid_lipschitz",
    "lipschitz_method",
    "schur_norm_bound",
]

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
        self._anchors: dict[tuple, _Anchor] = {}
        #: how many :meth:`grid` values were computed in full (the others were bracketed)
        self.full_computations = 0

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

    def grid(self, parameters: Sequence[torch.Tensor], atoms: Callable[[], torch.Tensor],
             stride: tuple[int, int] | None, padding: tuple[int, int] | None,
             signal_shape: Sequence[int]) -> float:
        """The certified grid value :func:`grid_lipschitz` for the current weights (``stride
        None``: a dense layer), bracketed from this cache's anchor (its own entries, apart
        from those of :meth:`conv` and :meth:`dense`)."""
        shape = (-1, *(int(s) for s in signal_shape))  # -1: apart from the conv entries
        key = self.key(parameters, shape)

        def compute() -> float:
            value, anchor, full = grid_lipschitz(atoms(), stride, padding, signal_shape,
                                                 self._anchors.get(key))
            if len(self._anchors) > 32:
                self._anchors.clear()
            self._anchors[key] = anchor
            self.full_computations += int(full)
            return value
        return self._lookup(parameters, shape, compute)


# ------------------------------------------------------------------------------------------
# The certified step-size constant of the joint ML-ISTA/ML-FISTA modes
# ------------------------------------------------------------------------------------------

#: ratio of consecutive points of the grid on which :func:`grid_lipschitz` reports ``L``
GRID_RATIO = 2.0 ** (1.0 / 16.0)
_LOG_GRID = math.log(GRID_RATIO)


def grid_index(value: float) -> int:
    """The ``k`` with ``GRID_RATIO**(k-1) < value <= GRID_RATIO**k`` (``value > 0``)."""
    k = math.ceil(math.log(value) / _LOG_GRID)
    # the logarithm rounds: settle the integer on the grid points themselves
    while GRID_RATIO ** k < value:
        k += 1
    while GRID_RATIO ** (k - 1) >= value:
        k -= 1
    return k


def schur_norm_bound(filters: torch.Tensor) -> float:
    """``sqrt(max_k ||f_k||_1 * max_c sum_k ||f_{k,c}||_1)`` for filters ``(K, C, ...)``: an
    upper bound on the spectral norm of the (strided, cropped or circular) correlation with
    them, and of the dense matrix ``(K, C)``.  Schur's test: ``||M||_2^2 <= ||M||_1
    ||M||_inf``; a column of the operator holds one filter, a row at most every tap of every
    filter on one input channel."""
    absolute = filters.abs().reshape(filters.shape[0], filters.shape[1], -1).sum(-1)
    return math.sqrt(float(absolute.sum(1).max()) * float(absolute.sum(0).max()))


def tap_norm_bound(filters: torch.Tensor, stride: tuple[int, int] | None) -> float:
    """``sum_(i,j) ||P[:, :, i, j]||_F`` over the taps of the polyphase filters ``P``
    (:func:`fourier_lipschitz_bound`; a dense ``(K, n)`` matrix is one tap): an upper bound on
    the spectral norm of the correlation with ``filters``, a sum over taps of shifted ``K x C
    s^2`` blocks (triangle inequality, ``||.||_2 <= ||.||_F``; cropping and circular wrapping
    only restrict the shifts)."""
    if stride is None:
        return float(torch.linalg.vector_norm(filters))
    n_filters, channels, kh, kw = filters.shape
    sh, sw = stride
    ph, pw = math.ceil(kh / sh), math.ceil(kw / sw)
    padded = torch.nn.functional.pad(filters, (0, pw * sw - kw, 0, ph * sh - kh))
    blocks = padded.reshape(n_filters, channels, ph, sh, pw, sw).square().sum((0, 1, 3, 5))
    return float(blocks.sqrt().sum())


def _polyphase(atoms: torch.Tensor, stride: tuple[int, int]) -> torch.Tensor:
    """``P (K, C s_h s_w, ceil(kh/s_h), ceil(kw/s_w))`` of :func:`fourier_lipschitz_bound`."""
    n_filters, channels, kh, kw = atoms.shape
    sh, sw = stride
    ph, pw = math.ceil(kh / sh), math.ceil(kw / sw)
    polyphase = atoms.new_zeros((n_filters, channels, sh, sw, ph, pw))
    for u in range(sh):
        for v in range(sw):
            part = atoms[:, :, u::sh, v::sw]
            polyphase[:, :, u, v, :part.shape[2], :part.shape[3]] = part
    return polyphase.reshape(n_filters, channels * sh * sw, ph, pw)


def _response_at(polyphase: torch.Tensor, grid: tuple[int, int], frequency: int
                 ) -> torch.Tensor:
    """``P_hat(omega)`` ``(K, C s^2)`` at one point (``frequency = omega_h N_w + omega_w``) of
    the grid, with the sign convention of ``torch.fft.fft2``."""
    ph, pw = polyphase.shape[-2:]
    omega_h, omega_w = divmod(frequency, grid[1])
    taps_h = torch.arange(ph, dtype=torch.float64, device=polyphase.device) * (omega_h / grid[0])
    taps_w = torch.arange(pw, dtype=torch.float64, device=polyphase.device) * (omega_w / grid[1])
    angles = -2.0 * math.pi * (taps_h.view(-1, 1) + taps_w.view(1, -1))
    phases = torch.polar(torch.ones_like(angles), angles).reshape(-1)
    return polyphase.reshape(*polyphase.shape[:2], -1).to(torch.complex128) @ phases


class _Anchor:
    """The last weights whose value ``V`` was computed in full, with the top singular vector
    (and, for the Fourier method, the frequency) that give the lower bounds."""

    def __init__(self, kind: str, atoms: torch.Tensor, value: float, vector: torch.Tensor,
                 frequency: int = 0) -> None:
        self.kind, self.atoms, self.value = kind, atoms, value
        self.vector, self.frequency = vector, frequency


def grid_lipschitz(atoms: torch.Tensor, stride: tuple[int, int] | None,
                   padding: tuple[int, int] | None, signal_shape: Sequence[int],
                   anchor: _Anchor | None, power_steps: int = 3
                   ) -> tuple[float, _Anchor, bool]:
    """``L = GRID_RATIO**k``, the smallest grid point ``>= V``, for the unit-norm ``atoms``:
    ``V = ||D||_2^2`` exactly for a dense layer (``stride=None``), else ``V`` is the value of
    :func:`conv_lipschitz` (exact, or the Fourier bound of the circulant polyphase operator).
    ``L`` is an upper bound on ``||D||_2^2``, within a factor ``GRID_RATIO`` (4.4 %) of ``V``,
    and a function of the weights alone (docs/theory.md A.8, "certified step").

    ``V`` is ``||A||_2^2`` for one linear function ``A`` of the atoms (the dictionary, or the
    circulant operator, block-diagonal in frequency).  Rather than computing it after every
    optimizer step, the step brackets it and stops when both ends round up to the same grid
    point:

    * below, ``||A v||^2/||v||^2`` after ``power_steps`` power iterations from the anchor's top
      singular vector (for the Fourier method on the anchor's maximising frequency only, whose
      norm is at most ``V``): any ``v`` gives a lower bound, warm starting makes it tight;
    * above, ``(sqrt(V_0) + ||A - A_0||_2)^2`` (triangle inequality) with ``V_0`` the value at
      the anchor weights ``A_0``, computed in full, and ``||A - A_0||_2`` bounded by the smaller
      of Schur's test (:func:`schur_norm_bound`) and the sum of the taps' Frobenius norms
      (:func:`tap_norm_bound`).

    Only when the bracket straddles a grid point (the weights drifted far from the anchor, or
    ``V`` sits near a grid point) is ``V`` computed in full, and the weights become the anchor:
    the anchor changes the cost, never the value (up to rounding within about 1e-13 of a grid
    point).  Returns ``(L, anchor, computed_in_full)``."""
    with torch.no_grad():
        atoms = atoms.detach().to(torch.float64)
        if stride is None:
            kind = "dense"
        else:
            operator = ConvDictionary(atoms, stride, padding)
            shape = operator.check_signal_shape(signal_shape)
            shape = shape[-3:] if len(shape) >= 3 else (atoms.shape[1], *shape)
            kind = "conv" if lipschitz_method(atoms.shape, stride, padding, shape) == "exact" \
                else "fourier"
            _, out_h, out_w = operator.code_shape(shape)
            extra = (shape[1] + 2 * padding[0] - atoms.shape[2] - (out_h - 1) * stride[0],
                     shape[2] + 2 * padding[1] - atoms.shape[3] - (out_w - 1) * stride[1])
        polyphase = _polyphase(atoms, stride) if kind == "fourier" else None
        grid = (out_h + polyphase.shape[2] - 1, out_w + polyphase.shape[3] - 1) \
            if kind == "fourier" else (0, 0)

        def operator_of(frequency: int):  # v -> A v, and A^H
            if kind == "dense":
                return (lambda v: atoms.T @ v), (lambda y: atoms @ y)
            if kind == "conv":
                return (lambda v: torch.nn.functional.conv_transpose2d(
                    v, atoms, None, stride, padding, extra)), \
                    (lambda y: torch.nn.functional.conv2d(y, atoms, None, stride, padding))
            response = _response_at(polyphase, grid, frequency)
            adjoint = response.conj().T.contiguous()
            return (lambda v: response @ v), (lambda y: adjoint @ y)

        def power(vector: torch.Tensor, frequency: int, steps: int) -> tuple[torch.Tensor,
                                                                              float]:
            forward, adjoint = operator_of(frequency)
            for _ in range(steps):
                vector = adjoint(forward(vector))
                vector = vector / torch.linalg.vector_norm(vector)
            return vector, float(torch.linalg.vector_norm(forward(vector)) ** 2)

        usable = anchor is not None and anchor.kind == kind and \
            anchor.atoms.shape == atoms.shape
        if usable:
            vector, lower = power(anchor.vector, anchor.frequency, power_steps)
            change = atoms - anchor.atoms
            upper = (math.sqrt(anchor.value) + min(schur_norm_bound(change),
                                                   tap_norm_bound(change, stride))) ** 2
            k = grid_index(upper)
            if lower > 0.0 and grid_index(lower) == k:
                return GRID_RATIO ** k, _Anchor(kind, anchor.atoms, anchor.value, vector,
                                                anchor.frequency), False
        frequency = 0
        if kind == "dense":
            wide = atoms.shape[0] <= atoms.shape[1]
            gram = atoms @ atoms.T if wide else atoms.T @ atoms
            values, vectors = torch.linalg.eigh(gram)
            value = float(values[-1])
            vector = vectors[:, -1] if wide else atoms @ vectors[:, -1]
        elif kind == "fourier":
            response = torch.fft.fft2(polyphase, s=grid).permute(2, 3, 0, 1) \
                .reshape(grid[0] * grid[1], *polyphase.shape[:2])
            small_side = response.shape[2] <= response.shape[1]
            gram = response.conj().transpose(1, 2) @ response if small_side else \
                response @ response.conj().transpose(1, 2)
            values, vectors = torch.linalg.eigh(gram)
            frequency = int(values[:, -1].argmax())
            value = float(values[frequency, -1])
            vector = vectors[frequency, :, -1]
            if not small_side:
                vector = response[frequency].conj().T @ vector
        else:
            value = conv_lipschitz(atoms, stride, padding, shape, "exact")
            generator = torch.Generator().manual_seed(0)
            start = vector if usable else torch.rand(
                (1, atoms.shape[0], out_h, out_w), generator=generator,
                dtype=torch.float64).to(atoms.device)
            vector, _ = power(start, 0, 30)
        return GRID_RATIO ** grid_index(value), _Anchor(kind, atoms.clone(), value, vector,
                                                        frequency), True
