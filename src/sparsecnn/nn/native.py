"""Native stride-1 convolution kernels for the k-step layer (speed: benchmarks/README.md, "Layers").

``kernels.cpp`` (next to this file) holds two loops, for float32 and float64, contiguous
NCHW tensors, stride 1, no dilation, one group:

* :func:`correlate` -- ``relu?(sign * (W ⋆ pad(v)) + bias + addend)``, the cross-correlation
  of ``conv2d`` with its bias, an added map and the rectifier fused into the pass that writes
  the output.  ``conv2d(r, W, b, padding=p)`` is ``correlate(r, W, p, bias=b)``; the residual
  ``x - D a = x - conv_transpose2d(a, W, padding=p)`` is ``correlate(a, flip(W)^T, k - 1 - p,
  sign=-1, addend=x)`` (:func:`residual`);
* :func:`add_weight_gradient` -- ``dW += alpha * sum_n m_n ⋆ pad(s_n)`` (the weight gradient
  of ``<m, conv2d(s, W)>``, and of ``<s, conv_transpose2d(m, W)>``) and, optionally,
  ``dbias += alpha_bias * sum m`` per channel.

Why: for the layer's shapes (3 signal channels, 64 code channels, 3x3) oneDNN's NCHW
convolution, its backward-weights kernel and the matrix-product synthesis each write or read
a 64-channel map through separate passes; the loops here keep a tile of 8 output channels x
one row segment in registers over all taps and write each output once (measured in
benchmarks/README.md, "Layers").

The library is compiled on first use with the machine's C++ compiler (``$CXX``, else
``c++``/``g++``; ``-O3 -march=native -fopenmp``) into a private cache directory
(``$SPARSECNN_CACHE``, default ``$XDG_CACHE_HOME/sparsecnn`` or ``~/.cache/sparsecnn``) and
loaded only after its ownership and SHA-256 are checked: :mod:`sparsecnn.nn.kernel_cache`
(docs/reliability.md, "Compiled kernels").  OpenMP resolves to the ``libgomp.so.1`` that
torch has loaded, so the loops run on torch's thread pool (``torch.set_num_threads``).
``SPARSECNN_NATIVE=0`` turns the kernels off (silently); when they cannot be built or loaded
safely (no or an unusable compiler, a compile timeout, a cache directory others can write)
they are off with one :class:`RuntimeWarning` naming the reason.  Either way the layer then
uses PyTorch's operations, with the same results to rounding, non-finite values included
(the fused rectifier maps NaN to NaN, as ``torch.relu`` does).
"""

from __future__ import annotations

import ctypes
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from . import kernel_cache
from .kernel_cache import cache_directory

__all__ = ["add_weight_gradient", "add_weight_gradient_then_correlate", "available",
           "cache_directory", "correlate", "reset", "residual", "supports", "transposed_weight"]

SOURCE = Path(__file__).with_name("kernels.cpp")
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17")
_DTYPES = {torch.float32: ("f32", ctypes.c_float), torch.float64: ("f64", ctypes.c_double)}
_STATE: dict[str, object] = {}


def _epilogue_type(scalar: type) -> type:
    """``Epilogue<T>`` of kernels.cpp, field for field."""
    pointer = ctypes.c_void_p
    return type(f"Epilogue_{scalar.__name__}", (ctypes.Structure,), {"_fields_": [
        ("bias", pointer), ("addend", pointer), ("inside", scalar), ("inside_relu", scalar),
        ("outside", scalar), ("relu", ctypes.c_int), ("scale", pointer), ("mask", pointer),
        ("rectified", pointer), ("previous", pointer), ("dots", pointer),
        ("signal_scale", pointer), ("extra", pointer), ("side", pointer),
        ("side_scale", pointer)]})


_EPILOGUES = {"f32": _epilogue_type(ctypes.c_float), "f64": _epilogue_type(ctypes.c_double)}


def _load() -> ctypes.CDLL | None:
    if "library" in _STATE:
        return _STATE["library"]  # type: ignore[return-value]
    library = None
    reason = None
    if os.environ.get("SPARSECNN_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        reason = "disabled by SPARSECNN_NATIVE"
    else:
        try:
            library = kernel_cache.load(SOURCE, FLAGS)
        except (OSError, kernel_cache.KernelCacheError) as error:
            reason = str(error)
        if library is None:  # asked for and failed: say why, once
            warnings.warn(f"sparsecnn native kernels unavailable ({reason}); the k-step "
                          "layer uses PyTorch operations (set SPARSECNN_NATIVE=0 to silence)",
                          RuntimeWarning, stacklevel=3)
    if library is not None:
        pointer, integer = ctypes.c_void_p, ctypes.c_int
        geometry = [integer] * 9
        for suffix, scalar in (("f32", ctypes.c_float), ("f64", ctypes.c_double)):
            correlate_function = getattr(library, f"sparsecnn_correlate_{suffix}")
            correlate_function.argtypes = [pointer, pointer, scalar,
                                           ctypes.POINTER(_EPILOGUES[suffix]), pointer,
                                           *geometry]
            correlate_function.restype = integer
            gradient_function = getattr(library, f"sparsecnn_weight_gradient_{suffix}")
            gradient_function.argtypes = [pointer, pointer, scalar, pointer, scalar, pointer,
                                          *geometry]
            gradient_function.restype = integer
            fused_function = getattr(library, f"sparsecnn_gradient_then_correlate_{suffix}")
            fused_function.argtypes = [*gradient_function.argtypes,
                                       *correlate_function.argtypes]
            fused_function.restype = integer
    _STATE["library"] = library
    _STATE["reason"] = reason
    return library


def available() -> bool:
    """Whether the kernels are compiled and loaded (builds them on the first call)."""
    return _load() is not None


def reset() -> None:
    """Forget the loaded library, so that the next call builds or loads it again with the
    current environment (``SPARSECNN_NATIVE``, ``CXX``, ``SPARSECNN_CACHE``,
    ``SPARSECNN_COMPILE_TIMEOUT``)."""
    _STATE.clear()


def supports(*tensors: torch.Tensor, stride: tuple[int, int], padding: tuple[int, int],
             kernel_size: tuple[int, int]) -> bool:
    """Whether :func:`correlate` / :func:`add_weight_gradient` apply: CPU float32/float64
    tensors of one dtype, stride 1, ``padding <= kernel_size - 1`` (the transposed form pads
    by ``kernel_size - 1 - padding``), and the kernels available."""
    dtype = tensors[0].dtype
    return (stride == (1, 1) and dtype in _DTYPES and
            all(t.dtype == dtype and t.device.type == "cpu" for t in tensors) and
            all(0 <= p <= k - 1 for p, k in zip(padding, kernel_size, strict=True)) and
            available())


def _pointer(tensor: torch.Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


def _check(status: int, name: str) -> None:
    if status == 1:
        raise ValueError(f"{name}: the kernel is larger than the padded input")
    if status:
        raise MemoryError(f"{name}: out of memory for the per-thread scratch")


def _validate(name: str, inputs: torch.Tensor, weight: torch.Tensor, input_axis: int,
              padding: tuple[int, int], *others: tuple[str, torch.Tensor | None]) -> str:
    """The kernel suffix for ``inputs``' dtype, after checking what the C loops assume."""
    if len(padding) != 2 or any(isinstance(p, bool) or not isinstance(p, int) or p < 0
                                for p in padding):
        raise ValueError(f"{name}: padding must be two integers >= 0; got {padding!r}")
    if inputs.dtype not in _DTYPES or inputs.device.type != "cpu":
        raise TypeError(f"{name}: expected CPU float32 or float64 tensors; got {inputs.dtype} "
                        f"on {inputs.device}")
    if inputs.dim() != 4 or weight.dim() != 4:
        raise ValueError(f"{name}: expected 4-D inputs and weight; got {inputs.dim()}-D and "
                         f"{weight.dim()}-D")
    if inputs.shape[1] != weight.shape[input_axis]:
        raise ValueError(f"{name}: inputs have {inputs.shape[1]} channels, weight expects "
                         f"{weight.shape[input_axis]}")
    for label, tensor in (("weight", weight), *others):
        if tensor is not None and (tensor.dtype != inputs.dtype or tensor.device.type != "cpu"):
            raise TypeError(f"{name}: {label} must be a CPU {inputs.dtype} tensor; got "
                            f"{tensor.dtype} on {tensor.device}")
    return _DTYPES[inputs.dtype][0]


def correlate(inputs: torch.Tensor, weight: torch.Tensor, padding: tuple[int, int],
              bias: torch.Tensor | None = None, sign: float = 1.0,
              addend: torch.Tensor | None = None, relu: bool = False,
              scale: torch.Tensor | None = None, out: torch.Tensor | None = None, *,
              inside: float = 1.0, inside_relu: float = 0.0, outside: float = 0.0,
              mask: torch.Tensor | None = None, rectified: torch.Tensor | None = None,
              previous: torch.Tensor | None = None, direction: torch.Tensor | None = None,
              signal_scale: torch.Tensor | None = None, extra: torch.Tensor | None = None,
              side: torch.Tensor | None = None, side_scale: torch.Tensor | None = None
              ) -> torch.Tensor:
    """The correlation ``v = sign * conv2d(inputs, weight, padding=padding)`` (stride 1)
    finished in the same pass over the output, with ``A = addend`` and ``n`` the signal::

        pre = v + bias + inside * A + inside_relu * relu(A)
        out = outside * A + [mask != 0] * (signal_scale[n] * scale * relu?(pre) + extra)
        rectified = relu(pre),   side = side_scale[n] * pre

    and, with ``previous`` and ``direction`` ``(N,)``, FISTA's restart test
    ``direction[n] = <A_n - out_n, out_n - previous_n>`` from the same pass.  ``inputs``
    ``(N, C, H, W)``, ``weight`` ``(K, C, kh, kw)``, ``bias`` and ``scale`` ``(K,)``,
    ``signal_scale`` and ``side_scale`` ``(N,)``; ``addend``, ``mask``, ``previous``,
    ``extra``, ``out``, ``rectified`` and ``side`` of the output's shape
    (``out``, ``rectified`` and ``side``, written when given, contiguous; ``out`` may be ``addend``
    itself, each output reading only its own position of it).  Not differentiable."""
    call = _correlation(inputs, weight, padding, bias, sign, addend, relu, scale, out,
                        inside, inside_relu, outside, mask, rectified, previous, direction,
                        signal_scale, extra, side, side_scale)
    status = getattr(call.library, f"sparsecnn_correlate_{call.suffix}")(*call.arguments)
    _check(status, "correlate")
    return call.finish()


@dataclass
class _Call:
    """A validated correlation: the C arguments (after ``inputs`` the pointers, the epilogue,
    the output and the geometry), the tensors they point into, and the restart sums."""

    library: ctypes.CDLL
    suffix: str
    arguments: list
    output: torch.Tensor
    keep: list
    dots: torch.Tensor | None = None
    direction: torch.Tensor | None = None

    def finish(self) -> torch.Tensor:
        if self.dots is not None:
            torch.sum(self.dots, 1, out=self.direction)
        return self.output


def _correlation(inputs, weight, padding, bias, sign, addend, relu, scale, out, inside,
                 inside_relu, outside, mask, rectified, previous, direction, signal_scale,
                 extra, side, side_scale) -> _Call:
    """Checks and C arguments of :func:`correlate` (same parameters)."""
    library = _load()
    if library is None:
        raise RuntimeError(f"native kernels unavailable: {_STATE.get('reason')}")
    suffix = _validate("correlate", inputs, weight, 1, padding, ("bias", bias),
                       ("addend", addend), ("scale", scale), ("out", out), ("mask", mask),
                       ("rectified", rectified), ("previous", previous),
                       ("direction", direction), ("signal_scale", signal_scale),
                       ("extra", extra), ("side", side), ("side_scale", side_scale))
    inputs, weight = inputs.contiguous(), weight.contiguous()
    batch, channels, height, width = inputs.shape
    out_channels, _, kernel_h, kernel_w = weight.shape
    out_h, out_w = height + 2 * padding[0] - kernel_h + 1, width + 2 * padding[1] - kernel_w + 1
    shape = (batch, out_channels, out_h, out_w)
    for label, target in (("out", out), ("rectified", rectified), ("side", side)):
        if target is not None and (tuple(target.shape) != shape or
                                   not target.is_contiguous()):
            raise ValueError(f"correlate: {label} must be contiguous with shape {shape}; got "
                             f"{tuple(target.shape)}")
    output = inputs.new_empty(shape) if out is None else out
    for label, vector in (("bias", bias), ("scale", scale)):
        if vector is not None and tuple(vector.shape) != (out_channels,):
            raise ValueError(f"correlate: {label} must have shape ({out_channels},); got "
                             f"{tuple(vector.shape)}")
    for label, tensor in (("addend", addend), ("mask", mask), ("previous", previous),
                          ("extra", extra)):
        if tensor is not None and tuple(tensor.shape) != shape:
            raise ValueError(f"correlate: {label} must have shape {shape}; got "
                             f"{tuple(tensor.shape)}")
    if addend is None and (inside_relu != 0.0 or outside != 0.0 or previous is not None):
        raise ValueError("correlate: inside_relu, outside and previous need an addend")
    if (previous is None) != (direction is None):
        raise ValueError("correlate: previous and direction go together")
    if (side is None) != (side_scale is None):
        raise ValueError("correlate: side and side_scale go together")
    for label, vector in (("direction", direction), ("signal_scale", signal_scale),
                          ("side_scale", side_scale)):
        if vector is not None and tuple(vector.shape) != (batch,):
            raise ValueError(f"correlate: {label} must have shape ({batch},); got "
                             f"{tuple(vector.shape)}")
    bias, addend, scale, mask, previous, signal_scale, extra, side_scale = (
        None if t is None else t.contiguous()
        for t in (bias, addend, scale, mask, previous, signal_scale, extra, side_scale))
    # one partial sum per (signal, block of 8 filters) task, added here
    dots = None if previous is None else inputs.new_zeros(
        (batch, -(-out_channels // library.sparsecnn_filter_tile())))
    epilogue = _EPILOGUES[suffix](_pointer(bias), _pointer(addend), inside, inside_relu,
                                  outside, int(relu), _pointer(scale), _pointer(mask),
                                  _pointer(rectified), _pointer(previous), _pointer(dots),
                                  _pointer(signal_scale), _pointer(extra), _pointer(side),
                                  _pointer(side_scale))
    arguments = [_pointer(inputs), _pointer(weight), sign, ctypes.byref(epilogue),
                 _pointer(output), batch, channels, height, width, out_channels, kernel_h,
                 kernel_w, padding[0], padding[1]]
    keep = [inputs, weight, bias, addend, scale, mask, previous, signal_scale, extra,
            side_scale, epilogue]
    return _Call(library, suffix, arguments, output, keep, dots, direction)


def transposed_weight(weight: torch.Tensor) -> torch.Tensor:
    """``W'[c, k, p, q] = W[k, c, kh-1-p, kw-1-q]``: ``conv_transpose2d`` with ``W`` is a
    correlation with ``W'``."""
    return weight.flip(2, 3).transpose(0, 1).contiguous()


def residual(signals: torch.Tensor | None, codes: torch.Tensor, weight: torch.Tensor,
             padding: tuple[int, int], transposed: torch.Tensor | None = None
             ) -> torch.Tensor:
    """``signals - conv_transpose2d(codes, weight, padding=padding)`` (stride 1; ``-D a``
    when ``signals`` is ``None``), with ``transposed`` the precomputed
    :func:`transposed_weight` if given."""
    kernel_h, kernel_w = weight.shape[2:]
    flipped = transposed_weight(weight) if transposed is None else transposed
    return correlate(codes, flipped, (kernel_h - 1 - padding[0], kernel_w - 1 - padding[1]),
                     sign=-1.0, addend=signals)


def _gradient(grad_weight: torch.Tensor, maps: torch.Tensor, signals: torch.Tensor,
              padding: tuple[int, int], alpha: float, grad_bias: torch.Tensor | None,
              alpha_bias: float) -> tuple[str, list, list]:
    """Checks of :func:`add_weight_gradient`; its suffix, C arguments and kept tensors."""
    if _load() is None:
        raise RuntimeError(f"native kernels unavailable: {_STATE.get('reason')}")
    if not grad_weight.is_contiguous() or (grad_bias is not None and
                                           not grad_bias.is_contiguous()):
        raise ValueError("grad_weight and grad_bias must be contiguous")
    suffix = _validate("add_weight_gradient", signals, grad_weight, 1, padding, ("maps", maps),
                       ("grad_bias", grad_bias))
    maps, signals = maps.contiguous(), signals.contiguous()
    batch, channels, height, width = signals.shape
    out_channels, _, kernel_h, kernel_w = grad_weight.shape
    expected = (batch, out_channels, height + 2 * padding[0] - kernel_h + 1,
                width + 2 * padding[1] - kernel_w + 1)
    if tuple(maps.shape) != expected:
        raise ValueError(f"maps must have shape {expected}; got {tuple(maps.shape)}")
    arguments = [_pointer(maps), _pointer(signals), alpha, _pointer(grad_weight), alpha_bias,
                 _pointer(grad_bias), batch, channels, height, width, out_channels, kernel_h,
                 kernel_w, padding[0], padding[1]]
    return suffix, arguments, [maps, signals]


def add_weight_gradient(grad_weight: torch.Tensor, maps: torch.Tensor, signals: torch.Tensor,
                        padding: tuple[int, int], alpha: float = 1.0,
                        grad_bias: torch.Tensor | None = None, alpha_bias: float = 1.0
                        ) -> None:
    """In place: ``grad_weight += alpha * d<maps, conv2d(signals, W, padding)>/dW`` and
    ``grad_bias += alpha_bias * maps.sum((0, 2, 3))``.  ``grad_weight`` ``(K, C, kh, kw)``
    and ``grad_bias`` must be contiguous."""
    suffix, arguments, _keep = _gradient(grad_weight, maps, signals, padding, alpha, grad_bias,
                                         alpha_bias)
    status = getattr(_load(), f"sparsecnn_weight_gradient_{suffix}")(*arguments)
    _check(status, "add_weight_gradient")


def add_weight_gradient_then_correlate(
        grad_weight: torch.Tensor, maps: torch.Tensor, signals: torch.Tensor,
        padding: tuple[int, int], inputs: torch.Tensor, weight: torch.Tensor,
        correlate_padding: tuple[int, int], alpha: float = 1.0,
        grad_bias: torch.Tensor | None = None, alpha_bias: float = 1.0, sign: float = 1.0,
        **epilogue) -> torch.Tensor:
    """:func:`add_weight_gradient` then :func:`correlate` (``inputs``, ``weight``,
    ``correlate_padding``, ``sign`` and the epilogue's keywords), signal by signal in one
    parallel loop: what the first reads of a signal's maps is still in the core's cache when
    the second reads them.  The two must have the same batch."""
    if maps.shape[0] != inputs.shape[0]:
        raise ValueError(f"maps and inputs must have the same batch; got {maps.shape[0]} and "
                         f"{inputs.shape[0]}")
    suffix, gradient_arguments, _keep = _gradient(grad_weight, maps, signals, padding, alpha,
                                                  grad_bias, alpha_bias)
    parameters = {"bias": None, "addend": None, "relu": False, "scale": None, "out": None,
                  "inside": 1.0, "inside_relu": 0.0, "outside": 0.0, "mask": None,
                  "rectified": None, "previous": None, "direction": None,
                  "signal_scale": None, "extra": None, "side": None, "side_scale": None}
    unknown = set(epilogue) - set(parameters)
    if unknown:
        raise TypeError(f"unknown epilogue keywords: {sorted(unknown)}")
    parameters.update(epilogue)
    call = _correlation(inputs, weight, correlate_padding, sign=sign, **parameters)
    if call.suffix != suffix:
        raise TypeError(f"maps are {maps.dtype}, inputs {inputs.dtype}: one dtype expected")
    status = getattr(call.library, f"sparsecnn_gradient_then_correlate_{suffix}")(
        *gradient_arguments, *call.arguments)
    if status == 3:
        raise ValueError("maps and inputs must have the same batch")
    _check(status, "add_weight_gradient_then_correlate")
    return call.finish()
