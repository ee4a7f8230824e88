"""``scales * a^k(x, W, lam)`` for :func:`sparsecnn.nn.sparse_conv2d` (docs/theory.md A.8):
the k-step convolutional map as one :class:`torch.autograd.Function`.

* The forward (:mod:`~sparsecnn.nn.unrolled_forward`) runs without autograd, and one
  :class:`UnrolledConvCoding` node holds the whole k-step map with the hand-written backward
  of :mod:`~sparsecnn.nn.unrolled_backward` (first-order only).
* The convolutions run on one :class:`~sparsecnn.nn.backends.ConvBackend`, chosen once per
  call (:func:`~sparsecnn.nn.backends.select_backend`) and kept for the backward.
* Forward and backward run the k steps chunk by chunk over the batch
  (:func:`~sparsecnn.nn.unrolling.batch_chunk`).
* The output scale ``||w||`` of the layer is applied inside the same function: with
  non-negative codes and positive scales the last step writes ``s a^k`` into the output
  itself, which is saved for the backward (``save_for_backward``: an in-place change to the
  output is refused at backward time, and the node holds no reference cycle to its output);
  the scale's gradient ``sum g a^k`` per channel is formed there too.
"""

from __future__ import annotations

import torch

from .backends import ConvBackend, select_backend
from .unrolled_backward import BACKWARD, CHANNEL_AXES, Gradients, lca_initial_codes_backward
from .unrolled_forward import FORWARD, OutputScaling, Trace
from .unrolling import ConvUnrolling, batch_chunk, batch_chunks, code_size

__all__ = ["UnrolledConvCoding", "unrolled_conv_codes"]


def _chunked_forward(x: torch.Tensor, atoms: torch.Tensor, lam: torch.Tensor,
                     scales: torch.Tensor | None, settings: ConvUnrolling,
                     backend: ConvBackend, record: bool
                     ) -> tuple[torch.Tensor, list[tuple[int, int]], list[Trace]]:
    """``scales * a^k`` chunk by chunk (every operation of the iteration is per signal), with
    the traces of the chunks when ``record``.  With non-negative codes and positive scales the
    last step writes ``s a^k`` into the output itself, and the traces' final codes are those
    scaled codes (``Trace.scaled``)."""
    forward = FORWARD[settings.method]
    chunks = batch_chunks(x.shape[0], batch_chunk(x, atoms, settings))
    traces: list[Trace] = []
    fold = scales is not None and settings.nonneg and bool((scales > 0).all())
    output = None
    if fold:
        output = x.new_empty((x.shape[0], atoms.shape[0],
                              *code_size(x.shape[-2:], atoms, settings)))
    for start, stop in chunks:
        trace = Trace([], [], [], []) if record else None
        final = OutputScaling(scales, output[start:stop]) if fold else None
        codes = forward(x[start:stop], atoms, lam, settings, backend, trace, final)
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


class UnrolledConvCoding(torch.autograd.Function):
    """``scales * a^k(x, W, lam)`` with the backward of :mod:`~sparsecnn.nn.unrolled_backward`
    (first-order only), run chunk by chunk over the batch."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, atoms: torch.Tensor, lam: torch.Tensor,
                scales: torch.Tensor | None, settings: ConvUnrolling) -> torch.Tensor:
        backend = select_backend(x, atoms, settings)
        output, chunks, traces = _chunked_forward(x, atoms, lam, scales, settings, backend,
                                                  True)
        ctx.settings = settings
        ctx.backend = backend
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
        gradients = Gradients(x, atoms, lam, needs, ctx.backend)
        grad_scales = torch.zeros_like(scales) if needs_scales else None
        # d/ds <g, s a^k> = sum over signals and positions of g a^k, read off the scaled
        # gradient g s (contiguous, unlike the expanded g of a .sum()) and divided by s
        # (by s^2 when the saved final codes are s a^k), unless some s is 0
        divide = needs_scales and bool((scales != 0).all())
        folded = folded_output is not None
        backward = BACKWARD[ctx.settings.method]
        for (start, stop), trace in zip(ctx.chunks, ctx.traces, strict=True):
            if folded:
                trace = Trace(trace.residuals, trace.points,
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
                    if divide else (raw * codes).sum(CHANNEL_AXES))
            gradients.select(start, stop)
            backward(grad, x[start:stop], atoms, lam, ctx.settings, trace, gradients)
        if gradients.initial_signal is not None:
            lca_initial_codes_backward(ctx.traces[0].initial_codes, atoms, lam, gradients)
        if divide:
            grad_scales.div_(scales * scales if folded else scales)
        return (gradients.x_total, gradients.weight if needs[1] else None,
                gradients.lam if needs[2] else None, grad_scales, None)


def unrolled_conv_codes(x: torch.Tensor, atoms: torch.Tensor, lam: torch.Tensor,
                        settings: ConvUnrolling, scales: torch.Tensor | None = None
                        ) -> torch.Tensor:
    """The k-th iterate ``a^k`` of ``settings.method`` on the convolutional sparse-coding
    energy with unit-norm ``atoms`` ``(K, C, kh, kw)`` and per-channel thresholds ``lam``
    ``(K,)`` (:mod:`~sparsecnn.nn.unrolled_forward`), times the per-channel output ``scales``
    ``(K,)`` when given; differentiable in ``x``, ``atoms``, ``lam`` and ``scales``.

    Signed codes need ``lam >= 0`` (a negative weight of ``|a|`` makes the energy unbounded
    below); :func:`sparsecnn.nn.sparse_conv2d` sends that case to the engine loop.
    """
    if not settings.nonneg and bool((lam < 0).any()):
        raise ValueError(f"lam must be >= 0 for signed codes; got minimum {float(lam.min()):.6g}")
    x = x.contiguous()
    leaves = (x, atoms, lam) if scales is None else (x, atoms, lam, scales)
    if torch.is_grad_enabled() and any(leaf.requires_grad for leaf in leaves):
        return UnrolledConvCoding.apply(x, atoms, lam, scales, settings)
    with torch.no_grad():
        return _chunked_forward(x, atoms, lam, scales, settings,
                                select_backend(x, atoms, settings), False)[0]
