"""Fast k-step convolutional sparse coding for :func:`sparsecnn.nn.sparse_conv2d` (issue 4, §7).

The same iterates as the engine loops (:func:`~sparsecnn.inference.proximal_gradient.
proximal_gradient` and :func:`~sparsecnn.inference.lca.lca` with ``tol=None``, step ``1/L``,
from ``a^0 = 0``; THEORY.md A.8), written with fewer passes over the codes:

* the residual ``r = x - D v`` is formed in signal space (``C`` channels, not ``K``), so one
  analysis convolution gives ``D^T x - D^T D v`` and, through its ``bias`` argument, the
  threshold offset.  Non-negative ISTA/FISTA, with ``theta = lam/L``::

      a^{t+1} = relu(y^t + conv2d(x - D y^t, W/L, bias=-theta)),   y^0 = a^0 = 0

  FISTA's ``y^t = a^t + beta_t (a^t - a^{t-1})`` (gradient restart of ``fista_momentum``).
  LCA on the shifted potential ``w = u - lam`` (``a = relu(w)``, ``eta = 1/L``)::

      w^{t+1} = (1 - eta) w^t + eta a^t + conv2d(x - D a^t, eta W, bias=-eta lam)

  Signed codes use the soft threshold ``S_theta(p) = p - clamp(p, -theta, theta)``.
* stride 1 with ``padding <= kernel - 1`` (float32/float64 on the CPU) runs on the native
  kernels of :mod:`sparsecnn.nn.native` (C++ compiled on first use, on torch's OpenMP pool):
  the analysis ``conv2d`` and the synthesis ``D a`` (``conv_transpose2d`` as a correlation
  with the flipped, transposed atoms) write each map once, with what follows them fused into
  that pass -- the bias, ``+ y`` and ``relu`` of a step, LCA's ``(1 - eta) w + eta relu(w)``
  and its codes ``relu(w)``, ``x -`` for the residual, the next threshold's mask and LCA's
  masked update in the backward, FISTA's restart test ``<y - a^t, a^t - a^{t-1}>``, and the
  layer's output scale; the weight gradients are long dot products over shifted copies of
  the signal-space map.  Otherwise (strides, no compiler, ``SPARSECNN_NATIVE=0``) PyTorch's
  operations run the same iteration: ``F.conv2d`` with in-place passes, and the synthesis as
  a matrix product ``W_mat^T a`` followed by the strided patch sums of ``col2im``
  (:func:`conv_synthesis`; oneDNN's ``conv_transpose2d`` is slow for few signal channels);
* the forward runs without autograd, updating its own buffers in place, and one
  :class:`torch.autograd.Function` holds the whole k-step map with a hand-written backward
  (the chain rule of the iteration above, reverse order): per step it applies ``D`` and
  ``D^T`` once to the gradient and forms the two weight gradients; threshold masks are read
  from the saved codes (``a != 0``);
* every operation of the iteration acts on each signal alone (FISTA's momentum and restart
  test are per signal too), and forward and backward run the k steps chunk by chunk over the
  batch (:func:`batch_chunk`), so that a chunk's code maps, ``CHUNK_BYTES`` each, can stay in
  the last-level cache from the pass that writes them to the passes that read them, where a
  whole batch of 64 x 64 x 32 x 32 codes (16.8 MB a map) streams through memory at every pass
  (measured in benchmarks/README.md, "Layers");
* the output scale ``||w||`` of the layer is applied inside the same function: with
  non-negative codes and positive scales the last step writes ``s a^k`` into the output
  itself, which is saved for the backward (``save_for_backward``: an in-place change to the
  output is refused at backward time, and the node holds no reference cycle to its output);
  the scale's gradient ``sum g a^k`` per channel is formed there too.

FISTA's momentum coefficients and restart decisions are piecewise constant in the inputs, so
they carry no gradient (as in the autograd path).  The first extrapolation has ``beta = 0``,
and a restart test right after an identity extrapolation (``y = a``) reads
``<a^{t-1} - a^t, a^t - a^{t-1}> <= 0``: both are skipped exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import native

__all__ = ["CHUNK_BYTES", "ConvUnrolling", "batch_chunk", "conv_synthesis", "unrolled_conv_codes"]

_CHANNEL_AXES = (0, 2, 3)
# Bytes of one code map per chunk of signals (module docstring).  4 MiB: a step's few live
# maps fit the 32 MiB last-level cache of the 2-core benchmark machine; smaller chunks pay the
# fixed ~40 us of each oneDNN call more often (benchmarks/README.md, "Layers").
CHUNK_BYTES = 4 * 2 ** 20


def conv_synthesis(codes: torch.Tensor, atoms: torch.Tensor, stride: tuple[int, int],
                   padding: tuple[int, int], signal_size: Sequence[int]) -> torch.Tensor:
    """``D a`` = ``conv_transpose2d(a, W, stride, padding, output_padding)`` for signals of
    spatial size ``signal_size``: the patches ``W_mat^T a`` (one matrix product) summed into the
    zero-padded signal (``col2im``) and cropped.  Not differentiable (used inside
    :class:`_UnrolledConvCoding`)."""
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


@dataclass(frozen=True)
class ConvUnrolling:
    """The fixed settings of one k-step map: ``method`` in ``ista``/``fista``/``lca``,
    ``n_iter >= 1``, step ``1/lipschitz``, FISTA ``restart``, ``nonneg``, the geometry, and
    ``batch_chunk``, the signals processed together (``None``: :func:`batch_chunk` chooses;
    the result does not depend on it beyond floating-point rounding)."""

    method: str
    n_iter: int
    lipschitz: float
    nonneg: bool
    restart: bool
    stride: tuple[int, int]
    padding: tuple[int, int]
    batch_chunk: int | None = None

    def __post_init__(self) -> None:
        chunk = self.batch_chunk
        if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or
                                  chunk < 1):
            raise ValueError(f"batch_chunk must be None or an integer >= 1; got {chunk!r}")

    @property
    def step(self) -> float:
        return 1.0 / self.lipschitz


@dataclass
class _Final:
    """Where the last step writes ``scales * a^k``: the chunk's slice ``out`` of the layer's
    output (non-negative codes and ``scales > 0``, so that ``s a^k`` keeps the support the
    backward reads from the saved final codes)."""

    scales: torch.Tensor
    out: torch.Tensor


def _native(signal: torch.Tensor, atoms: torch.Tensor, settings: ConvUnrolling) -> bool:
    """Whether the stride-1 kernels of :mod:`sparsecnn.nn.native` run this map."""
    return native.supports(signal, atoms, stride=settings.stride, padding=settings.padding,
                           kernel_size=tuple(atoms.shape[2:]))


def _analysis(signal: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
              settings: ConvUnrolling, addend: torch.Tensor | None = None,
              relu: bool = False, negate: bool = False, final: _Final | None = None, *,
              inside: float = 1.0, inside_relu: float = 0.0, outside: float = 0.0,
              mask: torch.Tensor | None = None, rectified: torch.Tensor | None = None,
              previous: torch.Tensor | None = None, direction: torch.Tensor | None = None,
              out: torch.Tensor | None = None) -> torch.Tensor:
    """``v = conv2d(signal, ±weight)`` finished as :func:`sparsecnn.nn.native.correlate`
    finishes it (``pre = v + bias + inside A + inside_relu relu(A)``, ``A = addend``; then
    ``relu``, times ``final.scales`` into ``final.out``, zero where ``mask == 0``, plus
    ``outside A``; ``rectified`` receives ``relu(pre)``): one pass with the native kernels,
    else PyTorch's convolution and in-place passes.  ``previous`` / ``direction`` (FISTA's
    restart test) only with the native kernels; ``out`` (native kernels only, else ignored)
    may be the addend itself, updated in place."""
    if _native(signal, weight, settings):
        return native.correlate(signal, weight, settings.padding, bias=bias,
                                sign=-1.0 if negate else 1.0, addend=addend, relu=relu,
                                scale=None if final is None else final.scales,
                                out=out if final is None else final.out, inside=inside,
                                inside_relu=inside_relu, outside=outside, mask=mask,
                                rectified=rectified, previous=previous, direction=direction)
    if direction is not None:
        raise ValueError("the restart direction is formed by the native kernels only")
    output = F.conv2d(signal, -weight if negate else weight, bias, settings.stride,
                      settings.padding)
    term = addend
    if addend is not None and inside_relu != 0.0 and inside + inside_relu == 1.0:
        term = F.leaky_relu(addend, inside)  # c A + (1 - c) relu(A), one pass
    elif addend is not None and (inside != 1.0 or inside_relu != 0.0):
        term = addend * inside
        if inside_relu != 0.0:
            term.add_(torch.relu(addend), alpha=inside_relu)
    if term is None:
        output = output.relu_() if relu else output
    else:
        output = torch.ops.aten._add_relu_(output, term) if relu else output.add_(term)
    if rectified is not None:
        torch.clamp_min(output, 0.0, out=rectified)
    if final is not None:
        output = torch.mul(output, final.scales.view(1, -1, 1, 1), out=final.out)
    if mask is not None:
        output.masked_fill_(mask == 0, 0.0)
    if outside != 0.0:
        output.add_(addend, alpha=outside)
    return output


def _synthesis(codes: torch.Tensor, atoms: torch.Tensor, settings: ConvUnrolling,
               size: Sequence[int], signal: torch.Tensor | None = None,
               scale: float = 1.0) -> torch.Tensor:
    """``signal - D codes`` (the residual), or ``scale * D codes`` when ``signal`` is None."""
    weight = atoms if scale == 1.0 else atoms * scale
    if _native(codes, atoms, settings):
        kernel_h, kernel_w = atoms.shape[2:]
        padding = (kernel_h - 1 - settings.padding[0], kernel_w - 1 - settings.padding[1])
        if signal is not None and signal.shape[0] != codes.shape[0]:  # LCA's one map a^0
            return signal - native.correlate(codes, native.transposed_weight(weight), padding)
        return native.correlate(codes, native.transposed_weight(weight), padding,
                                sign=1.0 if signal is None else -1.0, addend=signal)
    synthesis = conv_synthesis(codes, weight, settings.stride, settings.padding, size)
    return synthesis if signal is None else signal - synthesis


@dataclass
class _Trace:
    """What the backward pass needs: per step ``t = 1..k`` the residual ``r_t`` (signal
    space), the synthesised point ``v_{t-1}`` (``None`` for zero), the codes ``a_t`` (their
    support and signs are the threshold's derivative), and FISTA's ``beta`` of ``y^{t-1}``
    (``None``: ``y^{t-1} = a^{t-1}``).  LCA also keeps ``a_0`` (``None`` for zero)."""

    residuals: list[torch.Tensor]
    points: list[torch.Tensor | None]
    codes: list[torch.Tensor]
    betas: list[torch.Tensor | None]
    initial_codes: torch.Tensor | None = None
    scaled: bool = False  # codes[-1] is s a^k (a slice of the layer's output)


def _soft_threshold_(values: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """``S_theta(p) = p - clamp(p, -theta, theta)`` in place (``theta >= 0`` per channel)."""
    bound = theta.view(1, -1, 1, 1)
    return values.sub_(torch.clamp(values, min=-bound, max=bound))


def _momentum_step(new_codes: torch.Tensor, codes: torch.Tensor, extrapolated: torch.Tensor,
                   momentum: torch.Tensor, restart: bool, plain: bool,
                   direction: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``fista_momentum`` (same restart rule) returning ``(y, s_next, beta)`` with
    ``beta = None`` when every ``beta`` is 0 (then ``y = a``).  ``plain``: the previous
    extrapolation was the identity, so the restart test cannot fire.  ``direction``: the
    test's ``<y^{t-1} - a^t, a^t - a^{t-1}>`` per signal, already formed by the pass that
    wrote ``a^t`` (native kernels)."""
    difference = None
    if restart and not plain and direction is not None:
        momentum = torch.where(direction > 0, torch.ones_like(momentum), momentum)
    elif restart and not plain:
        difference = new_codes - codes
        # <y - a^t, d> as two dot products: no code-sized temporary for y - a^t
        flat_difference = difference.flatten(1)
        direction = (torch.linalg.vecdot(extrapolated.flatten(1), flat_difference) -
                     torch.linalg.vecdot(new_codes.flatten(1), flat_difference))
        momentum = torch.where(direction > 0, torch.ones_like(momentum), momentum)
    next_momentum = (1.0 + torch.sqrt(1.0 + 4.0 * momentum ** 2)) / 2.0
    beta = ((momentum - 1.0) / next_momentum).view(-1, 1, 1, 1)
    if not bool(beta.ne(0).any()):
        return new_codes, next_momentum, None
    if difference is None:  # one pass: a^{t-1} + (1 + beta)(a^t - a^{t-1})
        return torch.lerp(codes, new_codes, 1.0 + beta), next_momentum, beta
    return torch.addcmul(new_codes, beta, difference, out=difference), next_momentum, beta


def _proximal_gradient_forward(x: torch.Tensor, atoms: torch.Tensor, lam: torch.Tensor,
                               settings: ConvUnrolling, trace: _Trace | None,
                               final: _Final | None = None) -> torch.Tensor:
    step = settings.step
    scaled = atoms * step
    theta = lam * step
    bias = -theta if settings.nonneg else None
    accelerated = settings.method == "fista"
    size = x.shape[-2:]
    codes = extrapolated = None  # a^{t-1} and y^{t-1}; None for a^0 = y^0 = 0
    beta = None
    momentum = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
    for iteration in range(1, settings.n_iter + 1):
        residual = x if extrapolated is None else _synthesis(extrapolated, atoms, settings,
                                                             size, signal=x)
        # FISTA's restart test after this step, formed by the pass that writes a^t
        direction = None
        if (accelerated and settings.restart and beta is not None and settings.nonneg and
                iteration < settings.n_iter and _native(residual, scaled, settings)):
            direction = x.new_empty(x.shape[0])
        new_codes = _analysis(residual, scaled, bias, settings, addend=extrapolated,
                              relu=settings.nonneg,
                              final=final if iteration == settings.n_iter else None,
                              previous=None if direction is None else codes,
                              direction=direction)
        if not settings.nonneg:
            _soft_threshold_(new_codes, theta)
        if trace is not None:
            trace.residuals.append(residual)
            trace.points.append(extrapolated)
            trace.codes.append(new_codes)
            trace.betas.append(beta)
        if accelerated and iteration < settings.n_iter:
            zero = torch.zeros((), dtype=x.dtype, device=x.device)
            extrapolated, momentum, beta = _momentum_step(
                new_codes, zero if codes is None else codes,
                zero if extrapolated is None else extrapolated, momentum, settings.restart,
                plain=beta is None, direction=direction)
        else:
            extrapolated = new_codes
        codes = new_codes
    return codes


def _lca_forward(x: torch.Tensor, atoms: torch.Tensor, lam: torch.Tensor,
                 settings: ConvUnrolling, trace: _Trace | None,
                 final: _Final | None = None) -> torch.Tensor:
    eta = settings.step
    scaled = atoms * eta
    bias = -eta * lam if settings.nonneg else None
    size = x.shape[-2:]
    # potential u (signed) or shifted potential w = u - lam (non-negative); u^0 = 0, so
    # w^1 = (1 - eta)(-lam) + eta a^0 + conv2d(x - D a^0, eta W, -eta lam)
    #     = conv2d(x - D a^0, eta W, -lam + eta relu(-lam)),  a^0 = relu(-lam) per channel
    initial = _lca_initial_codes(atoms, lam, settings, size)
    residual, first_bias = x, None if bias is None else -lam
    if initial is not None:
        residual = _synthesis(initial, atoms, settings, size, signal=x)
        first_bias = -lam + eta * torch.relu(-lam)
    if trace is not None:
        trace.initial_codes = initial
    codes = potential = None
    for iteration in range(settings.n_iter):
        # the last potential is not kept: its codes s relu(w) are written in the same pass
        last = final if iteration == settings.n_iter - 1 else None
        # non-negative: the pass that writes w^{t+1} also writes a^{t+1} = relu(w^{t+1})
        codes_out = None if last is not None or not settings.nonneg else x.new_empty(
            (x.shape[0], atoms.shape[0], *_code_size(size, atoms, settings)))
        if iteration:
            residual = _synthesis(codes, atoms, settings, size, signal=x)
            if settings.nonneg:  # (1 - eta) w + eta relu(w), read as the addend
                # w^t is not kept: w^{t+1} overwrites it (each output reads only its own
                # position of the addend), in a buffer that is already in cache
                potential = _analysis(residual, scaled, bias, settings, addend=potential,
                                      relu=last is not None, final=last, inside=1.0 - eta,
                                      inside_relu=eta, rectified=codes_out,
                                      out=potential if last is None else None)
            else:
                potential = _analysis(residual, scaled, bias, settings,
                                      addend=potential.mul_(1.0 - eta).add_(codes, alpha=eta))
        else:
            potential = _analysis(residual, scaled, first_bias, settings,
                                  relu=last is not None, final=last, rectified=codes_out)
        if last is not None:
            new_codes = potential
        elif settings.nonneg:
            new_codes = codes_out
        else:
            new_codes = _soft_threshold_(potential.clone(), lam)
        if trace is not None:
            trace.residuals.append(residual)
            trace.points.append(codes)
            trace.codes.append(new_codes)
        codes = new_codes
    return codes


def _code_size(size: Sequence[int], atoms: torch.Tensor, settings: ConvUnrolling
               ) -> tuple[int, int]:
    """Spatial size of the code maps of signals of spatial size ``size``."""
    return tuple((int(size[axis]) + 2 * settings.padding[axis] - atoms.shape[2 + axis])
                 // settings.stride[axis] + 1 for axis in (0, 1))


def _lca_initial_codes(atoms: torch.Tensor, lam: torch.Tensor, settings: ConvUnrolling,
                       size: Sequence[int]) -> torch.Tensor | None:
    """``a^0 = T(u^0 = 0)`` as one code map ``(1, K, H', W')`` (the same for every signal):
    ``relu(-lam)`` per channel, ``None`` when it is zero (``lam >= 0`` or signed codes)."""
    if not settings.nonneg or not bool((lam < 0).any()):
        return None
    return torch.relu(-lam).view(1, -1, 1, 1).expand(
        1, -1, *_code_size(size, atoms, settings)).contiguous()


def _weight_gradient(grad_output: torch.Tensor, signal: torch.Tensor, atoms: torch.Tensor,
                     settings: ConvUnrolling, with_bias: bool
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gradient of ``<grad_output, conv2d(signal, W)>`` with respect to ``W`` (and the
    per-channel sum of ``grad_output``, the gradient of a conv bias, when ``with_bias``)."""
    _, weight, bias = torch.ops.aten.convolution_backward(
        grad_output, signal, atoms, [atoms.shape[0]] if with_bias else None, settings.stride,
        settings.padding, (1, 1), False, (0, 0), 1, [False, True, with_bias])
    return weight, bias


def _threshold_backward(grad: torch.Tensor, codes: torch.Tensor, nonneg: bool
                        ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gradient through ``a = T_theta(p)``: to ``p`` (``grad`` where ``a != 0``) and, for the
    soft threshold, to ``theta`` (``-sum sign(a) grad`` per channel; ``None`` when
    non-negative: there ``theta`` is a conv bias, whose gradient comes with the weight's)."""
    if nonneg:  # in place: ``grad`` is always a buffer of the backward pass's own
        return torch.ops.aten.threshold_backward.grad_input(grad, codes, 0, grad_input=grad), None
    masked = torch.where(codes != 0, grad, grad.new_zeros(()))
    return masked, -(masked * codes.sign()).sum(_CHANNEL_AXES)


class _Gradients:
    """Accumulators of the gradients with respect to ``x``, ``W`` and ``lam``."""

    def __init__(self, x: torch.Tensor, atoms: torch.Tensor, lam: torch.Tensor,
                 needs: tuple[bool, bool, bool]) -> None:
        self.needs_x, self.needs_weight, self.needs_lam = needs
        self.x_total = torch.zeros_like(x) if self.needs_x else None
        self.x = self.x_total
        # contiguous whatever the layout of the inputs: the native kernels accumulate in place
        self.weight = atoms.new_zeros(atoms.shape)
        self.lam = lam.new_zeros(lam.shape)
        self.initial_signal: torch.Tensor | None = None  # LCA: sum_n grad_r of x - D a^0

    def select(self, start: int, stop: int) -> None:
        """Send the gradient with respect to ``x`` of the next chunk to signals ``start:stop``."""
        if self.x_total is not None:
            self.x = self.x_total[start:stop]

    def add_analysis(self, grad_output: torch.Tensor, residual: torch.Tensor,
                     atoms: torch.Tensor, settings: ConvUnrolling, scale: float,
                     bias_scale: float | None) -> torch.Tensor | None:
        """``z = conv2d(r, scale W, bias_scale * lam)`` received ``grad_output``; returns the
        per-channel sum of ``grad_output`` when there is a bias."""
        if not (self.needs_weight or (self.needs_lam and bias_scale is not None)):
            return None
        if _native(residual, atoms, settings):
            bias = None if bias_scale is None else self.lam.new_zeros(self.lam.shape)
            native.add_weight_gradient(self.weight, grad_output, residual, settings.padding,
                                       alpha=scale, grad_bias=bias)
        else:
            weight, bias = _weight_gradient(grad_output, residual, atoms, settings,
                                            bias_scale is not None)
            self.weight.add_(weight, alpha=scale)
        if bias is not None:
            self.lam.add_(bias, alpha=bias_scale)
        return bias

    def add_synthesis(self, grad_signal: torch.Tensor, codes: torch.Tensor,
                      atoms: torch.Tensor, settings: ConvUnrolling) -> None:
        """``r = x - D v`` received ``grad_signal``: ``x`` gets it, ``W`` gets ``-d<g, D v>/dW``."""
        if self.x is not None:
            self.x.add_(grad_signal)
        if self.needs_weight:
            if _native(grad_signal, atoms, settings):
                native.add_weight_gradient(self.weight, codes, grad_signal, settings.padding,
                                           alpha=-1.0)
            else:
                weight, _ = _weight_gradient(codes, grad_signal, atoms, settings, False)
                self.weight.sub_(weight)

    def analysis_then_adjoint(self, grad_output: torch.Tensor, residual: torch.Tensor,
                              atoms: torch.Tensor, settings: ConvUnrolling, scale: float,
                              bias_scale: float) -> torch.Tensor:
        """:meth:`add_analysis` (with a bias) then ``scale * D grad_output``
        (:func:`_analysis_adjoint`), signal by signal in one native pass over
        ``grad_output``."""
        kernel_h, kernel_w = atoms.shape[2:]
        bias = self.lam.new_zeros(self.lam.shape)
        grad_residual = native.add_weight_gradient_then_correlate(
            self.weight, grad_output, residual, settings.padding, grad_output,
            native.transposed_weight(atoms * scale),
            (kernel_h - 1 - settings.padding[0], kernel_w - 1 - settings.padding[1]),
            alpha=scale, grad_bias=bias)
        self.lam.add_(bias, alpha=bias_scale)
        return grad_residual

    def synthesis_then_propagate(self, grad_signal: torch.Tensor, codes: torch.Tensor,
                                 atoms: torch.Tensor, settings: ConvUnrolling,
                                 **epilogue) -> torch.Tensor:
        """:meth:`add_synthesis` then the gradient ``-D^T grad_signal`` finished by the
        native ``epilogue`` (:func:`sparsecnn.nn.native.correlate`), signal by signal in one
        native pass over ``codes`` (whose mask the epilogue usually reads)."""
        if self.x is not None:
            self.x.add_(grad_signal)
        if not self.needs_weight:
            return native.correlate(grad_signal, atoms, settings.padding, sign=-1.0,
                                    **epilogue)
        return native.add_weight_gradient_then_correlate(
            self.weight, codes, grad_signal, settings.padding, grad_signal, atoms,
            settings.padding, alpha=-1.0, sign=-1.0, **epilogue)


def _analysis_adjoint(grad_output: torch.Tensor, atoms: torch.Tensor, scale: float,
                      settings: ConvUnrolling, size: Sequence[int]) -> torch.Tensor:
    """``scale * D grad_output``: the gradient reaching the residual of ``conv2d(r, scale W)``."""
    return _synthesis(grad_output, atoms, settings, size, scale=scale)


def _proximal_gradient_backward(grad_codes: torch.Tensor, x: torch.Tensor,
                                atoms: torch.Tensor, lam: torch.Tensor,
                                settings: ConvUnrolling, trace: _Trace,
                                gradients: _Gradients) -> None:
    step = settings.step
    size = x.shape[-2:]
    carry = None  # gradient reaching a^{t-1} through y^t (FISTA: -beta_t g_{y^t})
    grad = grad_codes
    masked = False  # grad already passed through the threshold's derivative
    fused = settings.nonneg and _native(x, atoms, settings) and (
        gradients.needs_weight or gradients.needs_lam)
    for index in range(settings.n_iter - 1, -1, -1):
        grad_point, grad_theta = (grad, None) if masked else _threshold_backward(
            grad, trace.codes[index], settings.nonneg)
        if grad_theta is not None:
            gradients.lam.add_(grad_theta, alpha=step)
        point = trace.points[index]
        if fused and (point is not None or gradients.needs_x):
            grad_residual = gradients.analysis_then_adjoint(
                grad_point, trace.residuals[index], atoms, settings, step, -step)
        else:
            gradients.add_analysis(grad_point, trace.residuals[index], atoms, settings, step,
                                   -step if settings.nonneg else None)
            if point is None and not gradients.needs_x:
                break
            grad_residual = _analysis_adjoint(grad_point, atoms, step, settings, size)
        if point is None:
            gradients.x.add_(grad_residual)
            break
        beta = trace.betas[index]
        if fused:
            # one pass: g_a = [a^{t-1} > 0] ((1 + beta) g_y + carry), carry' = -beta g_y
            # with g_y = grad_point - D^T grad_residual (y^{t-1} = (1 + beta) a^{t-1} -
            # beta a^{t-2}; beta = None: y^{t-1} = a^{t-1})
            side = None if beta is None else grad_point.new_empty(grad_point.shape)
            grad = gradients.synthesis_then_propagate(
                grad_residual, point, atoms, settings, addend=grad_point,
                mask=trace.codes[index - 1], extra=carry,
                signal_scale=None if beta is None else 1.0 + beta.flatten(),
                side=side, side_scale=None if beta is None else -beta.flatten())
            carry, masked = side, True
            continue
        gradients.add_synthesis(grad_residual, point, atoms, settings)
        # y^{t-1} received grad_point directly and -D^T grad_residual through r; when that is
        # all a^{t-1} receives (y^{t-1} = a^{t-1}, no carry), the next threshold's mask
        # (a^{t-1} != 0) is applied in the same pass
        masked = settings.nonneg and beta is None and carry is None
        grad_extrapolated = _analysis(grad_residual, atoms, None, settings,
                                      addend=grad_point, negate=True,
                                      mask=trace.codes[index - 1] if masked else None)
        if beta is None:
            grad = grad_extrapolated if carry is None else grad_extrapolated.add_(carry)
            carry = None
        else:  # y^{t-1} = (1 + beta) a^{t-1} - beta a^{t-2}
            grad = torch.addcmul(grad_extrapolated, beta, grad_extrapolated)
            if carry is not None:
                grad.add_(carry)
            carry = grad_extrapolated.mul_(-beta)


def _lca_backward(grad_codes: torch.Tensor, x: torch.Tensor, atoms: torch.Tensor,
                  lam: torch.Tensor, settings: ConvUnrolling, trace: _Trace,
                  gradients: _Gradients) -> None:
    eta = settings.step
    size = x.shape[-2:]
    grad_potential, grad_theta = _threshold_backward(grad_codes, trace.codes[-1],
                                                     settings.nonneg)
    if grad_theta is not None:
        gradients.lam.add_(grad_theta)
    fused = settings.nonneg and _native(x, atoms, settings) and (
        gradients.needs_weight or gradients.needs_lam)
    for index in range(settings.n_iter - 1, 0, -1):
        codes = trace.points[index]  # a^{t-1}
        if fused:  # [a^{t-1} > 0] (eta g_w - D^T g_r) + (1 - eta) g_w, in the same pass
            grad_residual = gradients.analysis_then_adjoint(
                grad_potential, trace.residuals[index], atoms, settings, eta, -eta)
            grad_potential = gradients.synthesis_then_propagate(
                grad_residual, codes, atoms, settings, addend=grad_potential, inside=eta,
                mask=codes, outside=1.0 - eta)
            continue
        gradients.add_analysis(grad_potential, trace.residuals[index], atoms, settings, eta,
                               -eta if settings.nonneg else None)
        grad_residual = _analysis_adjoint(grad_potential, atoms, eta, settings, size)
        gradients.add_synthesis(grad_residual, codes, atoms, settings)
        if settings.nonneg:  # [a^{t-1} > 0] (eta g_w - D^T g_r) + (1 - eta) g_w, one pass
            grad_potential = _analysis(grad_residual, atoms, None, settings,
                                       addend=grad_potential, negate=True, inside=eta,
                                       mask=codes, outside=1.0 - eta)
            continue
        grad_codes_previous = _analysis(grad_residual, atoms, None, settings,
                                        negate=True).add_(grad_potential, alpha=eta)
        masked, grad_theta = _threshold_backward(grad_codes_previous, codes, settings.nonneg)
        gradients.lam.add_(grad_theta)
        grad_potential = masked.add_(grad_potential, alpha=1.0 - eta)
    _lca_first_step_backward(grad_potential, atoms, lam, settings, trace, gradients)


def _lca_first_step_backward(grad_potential: torch.Tensor, atoms: torch.Tensor,
                             lam: torch.Tensor, settings: ConvUnrolling, trace: _Trace,
                             gradients: _Gradients) -> None:
    """``w^1 = conv2d(x - D a^0, eta W, -lam + eta relu(-lam))``, ``a^0 = relu(-lam)`` one map
    broadcast over the batch: its gradients are formed on the batch sum (one signal)."""
    eta = settings.step
    initial = trace.initial_codes
    bias_sum = gradients.add_analysis(grad_potential, trace.residuals[0], atoms, settings, eta,
                                      -1.0 if settings.nonneg else None)
    if initial is None and not gradients.needs_x:
        return
    size = trace.residuals[0].shape[-2:]
    grad_residual = None
    if gradients.x is not None:
        grad_residual = _analysis_adjoint(grad_potential, atoms, eta, settings, size)
        gradients.x.add_(grad_residual)
    if initial is None:
        return
    negative = (lam < 0).to(lam.dtype)  # d relu(-lam) / d lam = -negative
    if bias_sum is not None:
        gradients.lam.sub_(eta * negative * bias_sum)
    # the rest is linear in the batch sum of grad_r: summed over the chunks, finished once by
    # _lca_initial_codes_backward.  Without x's gradient, D is applied to the batch sum of
    # grad_w (one signal) rather than to every signal
    grad_signal = grad_residual.sum(0, keepdim=True) if grad_residual is not None else \
        _analysis_adjoint(grad_potential.sum(0, keepdim=True), atoms, eta, settings, size)
    if gradients.initial_signal is None:
        gradients.initial_signal = grad_signal
    else:
        gradients.initial_signal.add_(grad_signal)


def _lca_initial_codes_backward(initial: torch.Tensor, atoms: torch.Tensor, lam: torch.Tensor,
                                settings: ConvUnrolling, gradients: _Gradients) -> None:
    """Gradients through ``x - D a^0`` from the batch sum ``sum_n grad_r`` of all chunks."""
    grad_signal = gradients.initial_signal
    negative = (lam < 0).to(lam.dtype)
    if gradients.needs_weight:
        weight, _ = _weight_gradient(initial, grad_signal, atoms, settings, False)
        gradients.weight.sub_(weight)
    # a^0 received -D^T (sum_n grad_r), summed over positions
    through_codes = _analysis(grad_signal, atoms, None, settings)
    gradients.lam.add_(negative * through_codes.sum(_CHANNEL_AXES))


_FORWARD = {"ista": _proximal_gradient_forward, "fista": _proximal_gradient_forward,
            "lca": _lca_forward}
_BACKWARD = {"ista": _proximal_gradient_backward, "fista": _proximal_gradient_backward,
             "lca": _lca_backward}


def batch_chunk(x: torch.Tensor, atoms: torch.Tensor, settings: ConvUnrolling) -> int:
    """Signals per chunk: ``settings.batch_chunk``, or as many as keep one chunk's code map
    within ``CHUNK_BYTES`` (at least one signal)."""
    if settings.batch_chunk is not None:
        return settings.batch_chunk
    height, width = _code_size(x.shape[-2:], atoms, settings)
    per_signal = atoms.shape[0] * height * width * x.element_size()
    return max(1, CHUNK_BYTES // max(per_signal, 1))


def _chunks(batch: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(start + size, batch)) for start in range(0, batch, size)]


def _chunked_forward(x: torch.Tensor, atoms: torch.Tensor, lam: torch.Tensor,
                     scales: torch.Tensor | None, settings: ConvUnrolling, record: bool
                     ) -> tuple[torch.Tensor, list[tuple[int, int]], list[_Trace]]:
    """``scales * a^k`` chunk by chunk (every operation of the iteration is per signal), with
    the traces of the chunks when ``record``.  With non-negative codes and positive scales the
    last step writes ``s a^k`` into the output itself, and the traces' final codes are those
    scaled codes (``_Trace.scaled``)."""
    forward = _FORWARD[settings.method]
    chunks = _chunks(x.shape[0], batch_chunk(x, atoms, settings))
    traces: list[_Trace] = []
    fold = scales is not None and settings.nonneg and bool((scales > 0).all())
    output = None
    if fold:
        output = x.new_empty((x.shape[0], atoms.shape[0],
                              *_code_size(x.shape[-2:], atoms, settings)))
    for start, stop in chunks:
        trace = _Trace([], [], [], []) if record else None
        final = _Final(scales, output[start:stop]) if fold else None
        codes = forward(x[start:stop], atoms, lam, settings, trace, final)
        if trace is not None:
            trace.scaled = fold
            traces.append(trace)
        if fold:
            continue
        if len(chunks) == 1 and (scales is None or not record):
            # a fresh tensor: with scales=None the trace's final codes must not be the
            # caller's output (an in-place change to it would corrupt the backward)
            output = codes.clone() if scales is None and record else (
                codes if scales is None else codes.mul_(scales.view(1, -1, 1, 1)))
            break
        if output is None:
            output = codes.new_empty((x.shape[0], *codes.shape[1:]))
        if scales is None:
            output[start:stop].copy_(codes)
        else:
            torch.mul(codes, scales.view(1, -1, 1, 1), out=output[start:stop])
    return output, chunks, traces


class _UnrolledConvCoding(torch.autograd.Function):
    """``scales * a^k(x, W, lam)`` with the backward of the module docstring (first-order
    only), run chunk by chunk over the batch."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, atoms: torch.Tensor, lam: torch.Tensor,
                scales: torch.Tensor | None, settings: ConvUnrolling) -> torch.Tensor:
        output, chunks, traces = _chunked_forward(x, atoms, lam, scales, settings, True)
        ctx.settings = settings
        ctx.chunks = chunks
        ctx.traces = traces
        # the traces' final codes are slices of the output when folded.  They are saved
        # through save_for_backward only: autograd then refuses a backward after an in-place
        # change to the output, and ctx holds no reference to its own output (a cycle that
        # no garbage collector sees through, which leaked every call's graph)
        folded = traces[0].scaled
        if folded:
            for trace in traces:
                trace.codes[-1] = None
        ctx.save_for_backward(x, atoms, lam, scales, output if folded else None)
        return output

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output: torch.Tensor
                 ) -> tuple[torch.Tensor | None, ...]:
        x, atoms, lam, scales, folded_output = ctx.saved_tensors
        needs = tuple(ctx.needs_input_grad[:3])
        needs_scales = scales is not None and ctx.needs_input_grad[3]
        gradients = _Gradients(x, atoms, lam, needs)
        grad_scales = torch.zeros_like(scales) if needs_scales else None
        # d/ds <g, s a^k> = sum over signals and positions of g a^k, read off the scaled
        # gradient g s (contiguous, unlike the expanded g of a .sum()) and divided by s
        # (by s^2 when the saved final codes are s a^k), unless some s is 0
        divide = needs_scales and bool((scales != 0).all())
        folded = folded_output is not None
        backward = _BACKWARD[ctx.settings.method]
        for (start, stop), trace in zip(ctx.chunks, ctx.traces, strict=True):
            if folded:
                trace = _Trace(trace.residuals, trace.points,
                               [*trace.codes[:-1], folded_output[start:stop]], trace.betas,
                               trace.initial_codes, True)
            raw = grad_output[start:stop]
            # an owned, contiguous buffer: the backward masks it in place.  A broadcast
            # gradient (that of ``.sum()``, all strides 0) is copied first: multiplied as it
            # is, it takes TensorIterator's unvectorized path (0.38 against 0.05 ms a chunk)
            if scales is None or not raw.is_contiguous():
                grad = raw.clone(memory_format=torch.contiguous_format)
                if scales is not None:
                    grad.mul_(scales.view(1, -1, 1, 1))
            else:
                grad = raw * scales.view(1, -1, 1, 1)
            if needs_scales:
                codes = trace.codes[-1]
                grad_scales.add_(torch.linalg.vecdot(
                    grad.view(*grad.shape[:2], -1), codes.view(*codes.shape[:2], -1)).sum(0)
                    if divide else (raw * codes).sum(_CHANNEL_AXES))
            gradients.select(start, stop)
            backward(grad, x[start:stop], atoms, lam, ctx.settings, trace, gradients)
        if gradients.initial_signal is not None:
            _lca_initial_codes_backward(ctx.traces[0].initial_codes, atoms, lam, ctx.settings,
                                        gradients)
        if divide:
            grad_scales.div_(scales * scales if folded else scales)
        return (gradients.x_total, gradients.weight if needs[1] else None,
                gradients.lam if needs[2] else None, grad_scales, None)


def unrolled_conv_codes(x: torch.Tensor, atoms: torch.Tensor, lam: torch.Tensor,
                        settings: ConvUnrolling, scales: torch.Tensor | None = None
                        ) -> torch.Tensor:
    """The k-th iterate ``a^k`` of ``settings.method`` on the convolutional sparse-coding
    energy with unit-norm ``atoms`` ``(K, C, kh, kw)`` and per-channel thresholds ``lam``
    ``(K,)`` (module docstring), times the per-channel output ``scales`` ``(K,)`` when given;
    differentiable in ``x``, ``atoms``, ``lam`` and ``scales``.

    Signed codes need ``lam >= 0`` (a negative weight of ``|a|`` makes the energy unbounded
    below); :func:`sparsecnn.nn.sparse_conv2d` sends that case to the engine loop.
    """
    if not settings.nonneg and bool((lam < 0).any()):
        raise ValueError(f"lam must be >= 0 for signed codes; got minimum {float(lam.min()):.6g}")
    x = x.contiguous()
    leaves = (x, atoms, lam) if scales is None else (x, atoms, lam, scales)
    if torch.is_grad_enabled() and any(leaf.requires_grad for leaf in leaves):
        return _UnrolledConvCoding.apply(x, atoms, lam, scales, settings)
    with torch.no_grad():
        return _chunked_forward(x, atoms, lam, scales, settings, False)[0]
