"""Convolutional dictionaries: every filter at every stride position (docs/theory.md A.5), and the
Fourier bound on their spectral norm, computed per block of frequencies (A.8)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .._checks import as_tensor, check_int_pair, describe
from .base import Dictionary
from .spectral import POWER_ITERATION_LIMIT

LIPSCHITZ_BLOCK_BYTES = 32 << 20


def fourier_lipschitz_bound(atoms: torch.Tensor, stride: tuple[int, int],
                            padding: tuple[int, int], signal_shape: Sequence[int], *,
                            block_bytes: int | None = None) -> float:
    """An upper bound on ``||D||_2^2`` from the filters' frequency responses.

    Split the (padded) image into its ``s_h * s_w`` polyphase components; the strided
    correlation ``D^T x`` is then a stride-1 correlation of ``C s_h s_w`` channels with the
    polyphase filters ``P[k, (c, u, v), i, j] = W[k, c, s_h i + u, s_w j + v]``.  The finite
    operator (zero boundary) is a submatrix of the circular one on a grid of
    ``N_h = H_out + ceil(kh / s_h) - 1`` by ``N_w = W_out + ceil(kw / s_w) - 1`` points, whose
    norm is the largest singular value of ``P_hat(omega)`` (a ``K x C s^2`` matrix) over that
    grid.  So ``L <= max_omega lambda_max(P_hat(omega)^H P_hat(omega))``, tight for large
    images.

    The maximum is taken over blocks of frequency rows ``omega_h``,
    ``P_hat(omega_h, .) = sum_i exp(-2 pi i omega_h i / N_h) P_w[., i, .]`` with ``P_w`` the
    DFT along the width, so at most ``block_bytes`` (default :data:`LIPSCHITZ_BLOCK_BYTES`)
    of responses are held at once whatever the image size.
    """
    block_bytes = LIPSCHITZ_BLOCK_BYTES if block_bytes is None else int(block_bytes)
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
        grid_h, grid_w = out_h + ph - 1, out_w + pw - 1
        # DFT along the width only: (K, C s^2, ph, N_w), small (ph is the kernel's height)
        width_response = torch.fft.fft(polyphase, n=grid_w, dim=-1)
        row_bytes = 16 * grid_w * n_filters * polyphase.shape[1] * 2  # response and its Gram
        rows_per_block = max(1, block_bytes // max(row_bytes, 1))
        taps = torch.arange(ph, dtype=torch.float64, device=weight.device)
        best = 0.0
        for start in range(0, grid_h, rows_per_block):
            frequencies = torch.arange(start, min(start + rows_per_block, grid_h),
                                       dtype=torch.float64, device=weight.device)
            phases = torch.polar(torch.ones((), dtype=torch.float64, device=weight.device),
                                 -2.0 * math.pi * torch.outer(frequencies, taps) / grid_h)
            # (rows, N_w, K, C s^2)
            response = torch.einsum("kciw,ri->rwkc", width_response, phases)
            if response.shape[-1] <= response.shape[-2]:
                gram = response.conj().transpose(-1, -2) @ response
            else:
                gram = response @ response.conj().transpose(-1, -2)
            best = max(best, float(torch.linalg.eigvalsh(gram)[..., -1].max()))
        return best


class ConvDictionary(Dictionary):
    """Convolutional dictionary from a filter bank shaped like ``nn.Conv2d.weight``.

    ``weight`` is ``(n_filters, in_channels, kh, kw)``.  Signals are images
    ``(batch, in_channels, H, W)``; codes are ``(batch, n_filters, H_out, W_out)`` with
    ``H_out = floor((H + 2 padding - kh) / stride) + 1``.  Atom ``(k, p)`` is filter ``k``
    placed at output position ``p`` (cropped at the image border when ``padding > 0``), so

    * ``D^T x = conv2d(x, weight, stride, padding)`` (docs/theory.md A.5, check 7),
    * ``D a = conv_transpose2d(a, weight, stride, padding, output_padding)``.

    ``signal_size`` (optional ``(H, W)``) is the default image size for :meth:`lipschitz`,
    :meth:`orthogonality_gap` and :meth:`synthesis`.
    """

    def __init__(self, weight: Any, stride: int | Sequence[int] = 1,
                 padding: int | Sequence[int] = 0,
                 signal_size: Sequence[int] | None = None) -> None:
        super().__init__()
        tensor, _ = as_tensor(weight, "weight")
        if tensor.ndim != 4 or min(tensor.shape) == 0:
            raise ValueError(
                "weight must be 4-D (n_filters, in_channels, kh, kw) like nn.Conv2d.weight; "
                f"got {describe(tensor)}")
        self.filters = tensor
        self.stride = check_int_pair(stride, "stride")
        self.padding = check_int_pair(padding, "padding")
        if min(self.stride) < 1:
            raise ValueError(f"stride must be >= 1; got {stride!r}")
        if min(self.padding) < 0:
            raise ValueError(f"padding must be >= 0; got {padding!r}")
        self.signal_size = None if signal_size is None else check_int_pair(tuple(signal_size),
                                                                  "signal_size")

    def __repr__(self) -> str:
        k, c, kh, kw = self.filters.shape
        return (f"ConvDictionary(n_filters={k}, in_channels={c}, kernel_size=({kh}, {kw}), "
                f"stride={self.stride}, padding={self.padding}, dtype={self.dtype})")

    @property
    def weight(self) -> torch.Tensor:
        return self.filters

    @property
    def n_filters(self) -> int:
        return self.filters.shape[0]

    @property
    def in_channels(self) -> int:
        return self.filters.shape[1]

    @property
    def kernel_size(self) -> tuple[int, int]:
        return (self.filters.shape[2], self.filters.shape[3])

    def _out_size(self, size: int, axis: int) -> int:
        return (size + 2 * self.padding[axis] - self.kernel_size[axis]) // self.stride[axis] + 1

    def code_shape(self, signal_shape: Sequence[int]) -> tuple[int, ...]:
        shape = self.check_signal_shape(signal_shape)
        return (self.n_filters, self._out_size(shape[-2], 0), self._out_size(shape[-1], 1))

    def check_signal_shape(self, signal_shape: Any, name: str = "signal_shape"
                           ) -> tuple[int, ...]:
        """``signal_shape`` as a tuple of ints, ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)``,
        checked against the dictionary: ``C = in_channels``, ``H, W >= 1`` and
        ``H + 2 p_h >= kh`` (likewise ``W``) so that ``H_out = floor((H + 2 p_h - kh) / s_h)
        + 1 >= 1``; raises ``ValueError`` naming ``name`` and the expected value otherwise
        (a negative or too-small size would give an empty operator, whose norms are 0)."""
        expected = (f"(H, W), ({self.in_channels}, H, W) or (batch, {self.in_channels}, H, W) "
                    f"with H + 2*{self.padding[0]} >= {self.kernel_size[0]} and "
                    f"W + 2*{self.padding[1]} >= {self.kernel_size[1]}")
        try:
            shape = tuple(int(v) for v in signal_shape)
            integral = all(int(v) == v for v in signal_shape)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be {expected}; got {signal_shape!r}") from None
        if not integral or len(shape) not in (2, 3, 4) or min(shape[-2:]) < 1 or (
                len(shape) == 4 and shape[0] < 0):
            raise ValueError(f"{name} must be {expected}; got {signal_shape!r}")
        if len(shape) >= 3 and shape[-3] != self.in_channels:
            raise ValueError(f"{name} has {shape[-3]} channel(s) but the dictionary's filters "
                             f"have in_channels={self.in_channels}; expected {expected}; got "
                             f"{signal_shape!r}")
        for axis in range(2):
            if shape[-2 + axis] + 2 * self.padding[axis] < self.kernel_size[axis]:
                raise ValueError(
                    f"{name} is too small for the kernel {self.kernel_size} with padding "
                    f"{self.padding}: spatial size {shape[-2:]}; expected {expected}")
        return shape

    def _default_signal_shape(self) -> tuple[int, ...]:
        if self.signal_size is None:
            raise ValueError(
                "signal_shape is required for a ConvDictionary built without signal_size: "
                "pass the image shape (in_channels, H, W) or construct with signal_size=(H, W)")
        return (self.in_channels, *self.signal_size)

    def _signal_shape(self, signal_shape: Sequence[int] | None) -> tuple[int, ...]:
        """The one signal ``(C, H, W)`` that :meth:`lipschitz`, :meth:`orthogonality_gap` and
        :meth:`to_matrix` describe: ``signal_shape`` checked (a batch size is dropped), or the
        default from ``signal_size``."""
        if signal_shape is None:
            return self._default_signal_shape()
        shape = self.check_signal_shape(signal_shape)
        return (self.in_channels, *shape[-2:])

    def check_signal(self, x: torch.Tensor, name: str = "x") -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{name} must have shape (batch, {self.in_channels}, H, W) to match the "
                f"dictionary's in_channels={self.in_channels}; got shape {tuple(x.shape)}")
        for axis, size in enumerate(x.shape[-2:]):
            if size + 2 * self.padding[axis] < self.kernel_size[axis]:
                raise ValueError(
                    f"{name} is too small: spatial size {tuple(x.shape[-2:])} with padding "
                    f"{self.padding} is smaller than the kernel {self.kernel_size}")

    def analysis(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            self.check_signal(x)  # a clear error instead of conv2d's (shapes only: no scan)
        return F.conv2d(x, self.filters, stride=self.stride, padding=self.padding)

    def output_padding(self, signal_shape: Sequence[int], code_shape: Sequence[int]
                       ) -> tuple[int, int]:
        """``output_padding`` that makes ``conv_transpose2d`` return ``signal_shape``."""
        result = []
        for axis in range(2):
            natural = ((code_shape[-2 + axis] - 1) * self.stride[axis]
                       - 2 * self.padding[axis] + self.kernel_size[axis])
            extra = signal_shape[-2 + axis] - natural
            if not 0 <= extra < self.stride[axis]:
                raise ValueError(
                    f"signal_shape {tuple(signal_shape)} does not match codes of shape "
                    f"{tuple(code_shape)} for stride {self.stride}, padding {self.padding}")
            result.append(extra)
        return (result[0], result[1])

    def synthesis(self, codes: torch.Tensor, signal_shape: Sequence[int] | None = None
                  ) -> torch.Tensor:
        if codes.ndim != 4 or codes.shape[1] != self.n_filters:
            raise ValueError(f"codes must have shape (batch, {self.n_filters}, H_out, W_out) to "
                             f"match the dictionary's n_filters={self.n_filters}; got shape "
                             f"{tuple(codes.shape)}")
        if signal_shape is None and self.signal_size is not None:
            signal_shape = self.signal_size
        if signal_shape is not None:
            signal_shape = self.check_signal_shape(signal_shape)
        output_padding = (0, 0) if signal_shape is None else self.output_padding(
            signal_shape, codes.shape)
        return F.conv_transpose2d(codes, self.filters, stride=self.stride, padding=self.padding,
                                  output_padding=output_padding)

    def atom_norms(self) -> torch.Tensor:
        """Frobenius norm of every filter (the norm of an uncropped atom)."""
        return torch.linalg.vector_norm(self.filters.flatten(1), dim=1)

    def _like(self, filters: torch.Tensor) -> ConvDictionary:
        return ConvDictionary(filters, self.stride, self.padding, self.signal_size)

    def normalized(self) -> ConvDictionary:
        self.check_atoms("weight")
        return self._like(self.filters / self.atom_norms().view(-1, 1, 1, 1))

    def _float64(self) -> ConvDictionary:
        return self._like(self.filters.detach().to(torch.float64))

    def astype(self, dtype: torch.dtype) -> ConvDictionary:
        return self._like(self.filters.to(dtype))

    def lipschitz(self, signal_shape: Sequence[int] | None = None) -> float:
        """A Lipschitz constant ``L >= ||D||_2^2`` of ``a -> D^T (D a - x)``, cached.

        Up to :data:`POWER_ITERATION_LIMIT` (code entries times signal entries) it is
        ``||D||_2^2`` itself by power iteration (the base class).  Beyond that the power
        iteration needs hundreds of full-size convolutions (minutes for a 256x256 image), so it
        is the rigorous upper bound :func:`fourier_lipschitz_bound` from the polyphase
        frequency response of the filters: a few FFTs, tight as images grow (0.4% above
        ``||D||_2^2`` for 32x32 images and 3x3 filters), and a valid step ``1/L`` for ISTA/FISTA.
        """
        shape = self._signal_shape(signal_shape)
        if math.prod(self.code_shape(shape)) * math.prod(shape) <= POWER_ITERATION_LIMIT:
            return super().lipschitz(shape)
        key = self._cache_key(("fourier", *shape))
        if key not in self._lipschitz_cache:
            self._lipschitz_cache[key] = fourier_lipschitz_bound(
                self.filters, self.stride, self.padding, shape)
        return self._lipschitz_cache[key]

    def coherence(self) -> float:
        """Coherence of the translation-invariant dictionary (uncropped atoms): the largest
        normalized correlation between two filters at relative shifts that are multiples of
        the stride, excluding each atom with itself."""
        self.check_atoms("weight")
        unit = self._float64().normalized().filters
        kh, kw = self.kernel_size
        # correlations[i, j, u, v] = <f_j, f_i shifted by (u - kh + 1, v - kw + 1)>
        correlations = F.conv2d(unit, unit, padding=(kh - 1, kw - 1))
        sh, sw = self.stride
        rows = torch.arange(2 * kh - 1) - (kh - 1)
        cols = torch.arange(2 * kw - 1) - (kw - 1)
        keep = ((rows % sh == 0)[:, None] & (cols % sw == 0)[None, :]).to(correlations.device)
        values = correlations.abs() * keep
        eye = torch.eye(self.n_filters, dtype=torch.bool, device=values.device)
        values[:, :, kh - 1, kw - 1] = values[:, :, kh - 1, kw - 1].masked_fill(eye, 0.0)
        return float(values.max())

    def _axis_representatives(self, size: int, axis: int) -> tuple[int, list[tuple[int, int]]]:
        """Reduced signal length and (position, multiplicity) pairs along one axis.

        Atom ``q`` overlaps atoms ``|q' - q| < reach = ceil(k / s)`` and is cropped when
        ``q < ceil(p / s)`` (or symmetrically at the far end), so its row of ``D^T D``
        depends on the border only when ``q < reach + ceil(p / s)``: one interior
        representative stands for all farther atoms; border atoms are kept one by one.
        """
        k, s, p = self.kernel_size[axis], self.stride[axis], self.padding[axis]
        n_out = self._out_size(size, axis)
        reach = math.ceil(k / s)
        border = reach + math.ceil(p / s) + 1
        target = 2 * border + 1
        if n_out <= target:
            return size, [(q, 1) for q in range(n_out)]
        remainder = (size + 2 * p - k) % s
        reduced = (target - 1) * s + remainder + k - 2 * p
        shift = n_out - target
        reps = [(q, 1) for q in range(border)]
        reps.append((border, n_out - 2 * border))
        reps += [(q - shift, 1) for q in range(n_out - border, n_out)]
        return reduced, reps

    def orthogonality_gap(self, signal_shape: Sequence[int] | None = None) -> float:
        """``||D^T D - I||_F`` for images of ``signal_shape``, exactly, without building D.

        Row ``i`` of ``D^T D - I`` is ``D^T d_i - e_i`` with ``d_i = D e_i``.  It is computed by
        probing with unit impulses ``e_i``, one per filter and per class of positions
        (border positions one by one, all interior positions at once, on a reduced image
        whose border geometry is identical).
        """
        shape = self._signal_shape(signal_shape)
        operator = self._float64()
        h_reduced, rows = self._axis_representatives(shape[-2], 0)
        w_reduced, cols = self._axis_representatives(shape[-1], 1)
        reduced_shape = (1, self.in_channels, h_reduced, w_reduced)
        n_filters, ho, wo = operator.code_shape(reduced_shape)
        total = torch.zeros((), dtype=torch.float64)
        probes = [(k, r, c, mr * mc) for k in range(n_filters)
                  for r, mr in rows for c, mc in cols]
        chunk = 256
        with torch.no_grad():
            for start in range(0, len(probes), chunk):
                batch = probes[start:start + chunk]
                impulses = torch.zeros((len(batch), n_filters, ho, wo), dtype=torch.float64,
                                       device=self.device)
                index = torch.arange(len(batch))
                ks = torch.tensor([b[0] for b in batch])
                rs = torch.tensor([b[1] for b in batch])
                cs = torch.tensor([b[2] for b in batch])
                impulses[index, ks, rs, cs] = 1.0
                atoms = operator.synthesis(impulses, reduced_shape)
                rows_minus_identity = operator.analysis(atoms) - impulses
                row_norm2 = (rows_minus_identity.flatten(1) ** 2).sum(1)
                weights = torch.tensor([b[3] for b in batch], dtype=torch.float64)
                total = total + (weights * row_norm2).sum()
        return float(torch.sqrt(torch.clamp(total, min=0.0)))

    def to_matrix(self, signal_shape: Sequence[int] | None = None) -> torch.Tensor:
        """The explicit matrix ``(C*H*W, n_filters*H_out*W_out)``, for tests and small cases."""
        shape = self._signal_shape(signal_shape)
        code_shape = self.code_shape(shape)
        n_atoms = math.prod(code_shape)
        impulses = torch.eye(n_atoms, dtype=self.dtype, device=self.device).view(
            n_atoms, *code_shape)
        atoms = self.synthesis(impulses, (1, *shape))
        return atoms.reshape(n_atoms, -1).T
