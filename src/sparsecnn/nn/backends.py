"""The convolutions of the k-step map, chosen once per call: native kernels or PyTorch.

The unrolled iteration (:mod:`~sparsecnn.nn.unrolled_forward`,
:mod:`~sparsecnn.nn.unrolled_backward`) needs three primitives, for atoms ``W`` ``(K, C, kh, kw)``
with the layer's stride and padding:

* analysis ``v = conv2d(r, ±W, bias)`` (``D^T r``), finished by an :class:`Epilogue`::

      pre  = v + inside A + inside_relu relu(A)                     (A = addend)
      out  = outside A + [mask != 0] (signal_scale[n] scale relu?(pre) + extra)
      rectified = relu(pre),   side = side_scale[n] pre,
      direction[n] = <A_n - out_n, out_n - previous_n>              (FISTA's restart test)

* synthesis ``D a = conv_transpose2d(a, W)`` (or the residual ``x - D a``);
* the weight gradient ``dW += alpha d<m, conv2d(s, W)>/dW`` (and the conv bias's ``sum m``),

plus the two pairs the backward runs back to back (a weight gradient, then a synthesis or an
analysis of the same signals).  :func:`select_backend` picks one implementation for the whole
call:

* :class:`NativeBackend` -- stride 1 with ``padding <= kernel - 1``, float32/float64 on the CPU:
  the C++ kernels of :mod:`sparsecnn.nn.native` (compiled on first use, on torch's OpenMP
  pool) write each map once with the whole epilogue fused into that pass, the synthesis is a
  correlation with the flipped, transposed atoms, and each pair runs signal by signal in one
  parallel loop, so that what the first reads is still in the core's cache for the second;
* :class:`TorchBackend` -- otherwise (strides, no compiler, ``SPARSECNN_NATIVE=0``): the same
  results from ``F.conv2d`` with in-place passes, and the synthesis as a matrix product
  ``W_mat^T a`` followed by the strided patch sums of ``col2im`` (:func:`conv_synthesis`;
  oneDNN's ``conv_transpose2d`` is slow for few signal channels).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from . import native
from .unrolling import ConvUnrolling

__all__ = ["ConvBackend", "Epilogue", "NativeBackend", "TorchBackend", "conv_synthesis",
           "native_applies", "select_backend"]


@dataclass(frozen=True)
class Epilogue:
    """What finishes an analysis in the pass that writes it (module docstring; the keywords
    of :func:`sparsecnn.nn.native.correlate`).  ``addend``, ``mask``, ``extra`` and
    ``previous`` have the output's shape, ``scale`` ``(K,)``, ``signal_scale``,
    ``side_scale`` and ``direction`` ``(N,)``; ``out``, ``rectified``, ``side`` and
    ``direction`` are written when given (``out`` may be ``addend`` itself)."""

    addend: torch.Tensor | None = None
    inside: float = 1.0
    inside_relu: float = 0.0
    relu: bool = False
    scale: torch.Tensor | None = None
    signal_scale: torch.Tensor | None = None
    extra: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    outside: float = 0.0
    rectified: torch.Tensor | None = None
    side: torch.Tensor | None = None
    side_scale: torch.Tensor | None = None
    previous: torch.Tensor | None = None
    direction: torch.Tensor | None = None
    out: torch.Tensor | None = None

    def keywords(self) -> dict[str, object]:
        """The fields as keyword arguments (the tensors themselves, not copies)."""
        return {field.name: getattr(self, field.name) for field in fields(self)}


NO_EPILOGUE = Epilogue()


def conv_synthesis(codes: torch.Tensor, atoms: torch.Tensor, stride: tuple[int, int],
                   padding: tuple[int, int], signal_size: Sequence[int]) -> torch.Tensor:
    """``D a`` = ``conv_transpose2d(a, W, stride, padding, output_padding)`` for signals of
    spatial size ``signal_size``: the patches ``W_mat^T a`` (one matrix product) summed into the
    zero-padded signal (``col2im``) and cropped.  Not differentiable (used inside
    :class:`~sparsecnn.nn.unrolled_function.UnrolledConvCoding`)."""
    batch, n_filters, code_height, code_width = codes.shape
    channels, kernel_height, kernel_width = atoms.shape[1:]
    height, width = (int(s) for s in signal_size)
    (stride_h, stride_w), (pad_h, pad_w) = stride, padding
    # an explicit bmm: torch.matmul may fold the batch into one mm and copy the codes
    patches = torch.bmm(atoms.reshape(n_filters, -1).t().expand(batch, -1, -1),
                        codes.reshape(batch, n_filters, code_height * code_width))
    patches = patches.view(batch, channels, kernel_height, kernel_width, code_height,
                           code_width)
    padded_height = max(height + 2 * pad_h, (code_height - 1) * stride_h + kernel_height)
    padded_width = max(width + 2 * pad_w, (code_width - 1) * stride_w + kernel_width)
    # kw strided sums along the width for all kernel rows at once, then kh along the height:
    # kh + kw small operations instead of kh * kw
    rows = codes.new_zeros(batch, channels, kernel_height, code_height, padded_width)
    for column in range(kernel_width):
        rows[..., column:column + (code_width - 1) * stride_w + 1:stride_w].add_(
            patches[:, :, :, column])
    padded = codes.new_zeros(batch, channels, padded_height, padded_width)
    for row in range(kernel_height):
        padded[:, :, row:row + (code_height - 1) * stride_h + 1:stride_h].add_(rows[:, :, row])
    return padded[:, :, pad_h:pad_h + height, pad_w:pad_w + width]


class ConvBackend(ABC):
    """The primitives of the k-step map for one geometry (module docstring).  The pairs
    default to their two halves in turn; an implementation may fuse them."""

    def __init__(self, settings: ConvUnrolling) -> None:
        self.stride = settings.stride
        self.padding = settings.padding

    @abstractmethod
    def analysis(self, signal: torch.Tensor, weight: torch.Tensor,
                 bias: torch.Tensor | None = None, sign: float = 1.0,
                 epilogue: Epilogue = NO_EPILOGUE) -> torch.Tensor:
        """``conv2d(signal, sign * weight, bias)`` (``sign`` is ``±1``) finished by
        ``epilogue``."""

    @abstractmethod
    def synthesis(self, codes: torch.Tensor, weight: torch.Tensor, size: Sequence[int],
                  signal: torch.Tensor | None = None) -> torch.Tensor:
        """``D codes`` for signals of spatial size ``size``, or the residual
        ``signal - D codes`` (``signal`` may be one map broadcast over the batch)."""

    @abstractmethod
    def add_weight_gradient(self, grad_weight: torch.Tensor, maps: torch.Tensor,
                            signals: torch.Tensor, alpha: float = 1.0,
                            grad_bias: torch.Tensor | None = None) -> None:
        """In place: ``grad_weight += alpha d<maps, conv2d(signals, W)>/dW`` and
        ``grad_bias += maps.sum((0, 2, 3))`` (both contiguous)."""

    def add_weight_gradient_then_synthesis(
            self, grad_weight: torch.Tensor, maps: torch.Tensor, signals: torch.Tensor,
            alpha: float, grad_bias: torch.Tensor | None, weight: torch.Tensor
            ) -> torch.Tensor:
        """:meth:`add_weight_gradient` then ``D_weight maps`` (signals' spatial size)."""
        self.add_weight_gradient(grad_weight, maps, signals, alpha, grad_bias)
        return self.synthesis(maps, weight, signals.shape[-2:])

    def add_weight_gradient_then_analysis(
            self, grad_weight: torch.Tensor, maps: torch.Tensor, signals: torch.Tensor,
            alpha: float, weight: torch.Tensor, sign: float = 1.0,
            epilogue: Epilogue = NO_EPILOGUE) -> torch.Tensor:
        """:meth:`add_weight_gradient` (no bias) then :meth:`analysis` of ``signals``."""
        self.add_weight_gradient(grad_weight, maps, signals, alpha)
        return self.analysis(signals, weight, sign=sign, epilogue=epilogue)


class TorchBackend(ConvBackend):
    """PyTorch's operations: ``F.conv2d``, in-place passes, :func:`conv_synthesis` and
    ``convolution_backward``; any stride and padding, any device."""

    def analysis(self, signal: torch.Tensor, weight: torch.Tensor,
                 bias: torch.Tensor | None = None, sign: float = 1.0,
                 epilogue: Epilogue = NO_EPILOGUE) -> torch.Tensor:
        e = epilogue
        addend = e.addend
        if addend is not None and e.out is addend and (e.outside != 0.0 or
                                                       e.previous is not None):
            addend = addend.clone()  # read again after ``out`` overwrites it
        output = F.conv2d(signal, -weight if sign < 0 else weight, bias, self.stride,
                          self.padding)
        term = addend
        if addend is not None and e.inside_relu != 0.0 and e.inside + e.inside_relu == 1.0:
            term = F.leaky_relu(addend, e.inside)  # c A + (1 - c) relu(A), one pass
        elif addend is not None and (e.inside != 1.0 or e.inside_relu != 0.0):
            term = addend * e.inside
            if e.inside_relu != 0.0:
                term.add_(torch.relu(addend), alpha=e.inside_relu)
        # the last pass before the mask writes into ``out`` when nothing later reads it
        direct = e.out is not None and e.scale is None and e.side is None
        relu_now = e.relu and e.side is None
        if term is None:
            output = output.relu_() if relu_now else output
        elif direct:
            # not aten._add_relu: it maps NaN to 0 and inf to the largest float
            output = torch.add(output, term, out=e.out)
            output = output.relu_() if relu_now else output
        else:
            output = output.add_(term).relu_() if relu_now else output.add_(term)
        if e.side is not None:
            torch.mul(output, e.side_scale.view(-1, 1, 1, 1), out=e.side)
            if e.relu:
                output.relu_()
        if e.rectified is not None:
            torch.clamp_min(output, 0.0, out=e.rectified)
        if e.scale is not None:
            output = torch.mul(output, e.scale.view(1, -1, 1, 1), out=e.out)
        if e.signal_scale is not None:
            output.mul_(e.signal_scale.view(-1, 1, 1, 1))
        if e.extra is not None:
            output.add_(e.extra)
        if e.mask is not None:
            output.masked_fill_(e.mask == 0, 0.0)
        if e.outside != 0.0:
            output.add_(addend, alpha=e.outside)
        if e.out is not None and output is not e.out:
            output = e.out.copy_(output)
        if e.previous is not None:
            # <A - out, out - previous> as two dot products: no second code-sized temporary
            difference = (output - e.previous).flatten(1)
            torch.sub(torch.linalg.vecdot(addend.flatten(1), difference),
                      torch.linalg.vecdot(output.flatten(1), difference), out=e.direction)
        return output

    def synthesis(self, codes: torch.Tensor, weight: torch.Tensor, size: Sequence[int],
                  signal: torch.Tensor | None = None) -> torch.Tensor:
        synthesis = conv_synthesis(codes, weight, self.stride, self.padding, size)
        return synthesis if signal is None else signal - synthesis

    def add_weight_gradient(self, grad_weight: torch.Tensor, maps: torch.Tensor,
                            signals: torch.Tensor, alpha: float = 1.0,
                            grad_bias: torch.Tensor | None = None) -> None:
        with_bias = grad_bias is not None
        _, weight, bias = torch.ops.aten.convolution_backward(
            maps, signals, grad_weight, [grad_weight.shape[0]] if with_bias else None,
            self.stride, self.padding, (1, 1), False, (0, 0), 1, [False, True, with_bias])
        grad_weight.add_(weight, alpha=alpha)
        if with_bias:
            grad_bias.add_(bias)


class NativeBackend(ConvBackend):
    """The stride-1 kernels of :mod:`sparsecnn.nn.native`, each epilogue and each pair in one
    pass (:func:`native_applies` says when they apply)."""

    def _transposed_padding(self, weight: torch.Tensor) -> tuple[int, int]:
        """``conv_transpose2d`` with padding ``p`` is a correlation padded by ``k - 1 - p``."""
        kernel_h, kernel_w = weight.shape[2:]
        return kernel_h - 1 - self.padding[0], kernel_w - 1 - self.padding[1]

    def analysis(self, signal: torch.Tensor, weight: torch.Tensor,
                 bias: torch.Tensor | None = None, sign: float = 1.0,
                 epilogue: Epilogue = NO_EPILOGUE) -> torch.Tensor:
        return native.correlate(signal, weight, self.padding, bias=bias, sign=sign,
                                **epilogue.keywords())

    def synthesis(self, codes: torch.Tensor, weight: torch.Tensor, size: Sequence[int],
                  signal: torch.Tensor | None = None) -> torch.Tensor:
        padding = self._transposed_padding(weight)
        if signal is not None and signal.shape[0] != codes.shape[0]:  # LCA's one map a^0
            return signal - native.correlate(codes, native.transposed_weight(weight), padding)
        return native.correlate(codes, native.transposed_weight(weight), padding,
                                sign=1.0 if signal is None else -1.0, addend=signal)

    def add_weight_gradient(self, grad_weight: torch.Tensor, maps: torch.Tensor,
                            signals: torch.Tensor, alpha: float = 1.0,
                            grad_bias: torch.Tensor | None = None) -> None:
        native.add_weight_gradient(grad_weight, maps, signals, self.padding, alpha=alpha,
                                   grad_bias=grad_bias)

    def add_weight_gradient_then_synthesis(
            self, grad_weight: torch.Tensor, maps: torch.Tensor, signals: torch.Tensor,
            alpha: float, grad_bias: torch.Tensor | None, weight: torch.Tensor
            ) -> torch.Tensor:
        return native.add_weight_gradient_then_correlate(
            grad_weight, maps, signals, self.padding, maps, native.transposed_weight(weight),
            self._transposed_padding(weight), alpha=alpha, grad_bias=grad_bias)

    def add_weight_gradient_then_analysis(
            self, grad_weight: torch.Tensor, maps: torch.Tensor, signals: torch.Tensor,
            alpha: float, weight: torch.Tensor, sign: float = 1.0,
            epilogue: Epilogue = NO_EPILOGUE) -> torch.Tensor:
        return native.add_weight_gradient_then_correlate(
            grad_weight, maps, signals, self.padding, signals, weight, self.padding,
            alpha=alpha, sign=sign, **epilogue.keywords())


def native_applies(x: torch.Tensor, atoms: torch.Tensor, settings: ConvUnrolling) -> bool:
    """Whether the stride-1 kernels of :mod:`sparsecnn.nn.native` run this map."""
    return native.supports(x, atoms, stride=settings.stride, padding=settings.padding,
                           kernel_size=tuple(atoms.shape[2:]))


def select_backend(x: torch.Tensor, atoms: torch.Tensor, settings: ConvUnrolling
                   ) -> ConvBackend:
    """The one implementation that runs a whole call: native kernels when they apply."""
    if native_applies(x, atoms, settings):
        return NativeBackend(settings)
    return TorchBackend(settings)
