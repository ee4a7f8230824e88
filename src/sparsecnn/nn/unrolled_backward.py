"""The hand-written backward of the k-step map of :mod:`~sparsecnn.nn.unrolled_forward`.

The chain rule of the iteration in reverse order: per step, ``D`` and ``D^T`` are applied once
to the gradient and the two weight gradients are formed (that of the analysis
``conv2d(r, W/L)`` on the residual, that of the synthesis ``D v`` on the point), each weight
gradient in the same pass as the convolution that follows it
(:meth:`~sparsecnn.nn.backends.ConvBackend.add_weight_gradient_then_synthesis` /
``_then_analysis``).  Threshold masks are read from the saved codes (``a != 0``); with
non-negative codes the next threshold's mask, FISTA's ``(1 + beta)`` and its carry
``-beta g_y``, and LCA's masked update are the epilogue of the ``-D^T`` pass.  The
gradients of ``lam`` come through the threshold offset, a conv bias for non-negative codes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .backends import ConvBackend, Epilogue
from .unrolled_forward import Trace
from .unrolling import ConvUnrolling

__all__ = ["BACKWARD", "CHANNEL_AXES", "Gradients", "lca_backward", "lca_initial_codes_backward",
           "proximal_gradient_backward"]

CHANNEL_AXES = (0, 2, 3)


def _threshold_backward(grad: torch.Tensor, codes: torch.Tensor, nonneg: bool
                        ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gradient through ``a = T_theta(p)``: to ``p`` (``grad`` where ``a != 0``) and, for the
    soft threshold, to ``theta`` (``-sum sign(a) grad`` per channel; ``None`` when
    non-negative: there ``theta`` is a conv bias, whose gradient comes with the weight's)."""
    if nonneg:  # in place: ``grad`` is always a buffer of the backward pass's own
        return torch.ops.aten.threshold_backward.grad_input(grad, codes, 0, grad_input=grad), None
    masked = torch.where(codes != 0, grad, grad.new_zeros(()))
    return masked, -(masked * codes.sign()).sum(CHANNEL_AXES)


class Gradients:
    """Accumulators of the gradients with respect to ``x``, ``W`` and ``lam``, and the
    backend that forms them."""

    def __init__(self, x: torch.Tensor, atoms: torch.Tensor, lam: torch.Tensor,
                 needs: tuple[bool, bool, bool], backend: ConvBackend) -> None:
        self.backend = backend
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

    def _analysis_parameters(self, bias_scale: float | None) -> bool:
        """Whether ``conv2d(r, scale W, bias_scale * lam)`` passes a gradient to W or lam."""
        return self.needs_weight or (self.needs_lam and bias_scale is not None)

    def add_analysis(self, grad_output: torch.Tensor, residual: torch.Tensor,
                     atoms: torch.Tensor, scale: float, bias_scale: float | None
                     ) -> torch.Tensor | None:
        """``z = conv2d(r, scale W, bias_scale * lam)`` received ``grad_output``; returns the
        per-channel sum of ``grad_output`` when there is a bias."""
        if not self._analysis_parameters(bias_scale):
            return None
        bias = None if bias_scale is None else self.lam.new_zeros(self.lam.shape)
        self.backend.add_weight_gradient(self.weight, grad_output, residual, scale, bias)
        if bias is not None:
            self.lam.add_(bias, alpha=bias_scale)
        return bias

    def analysis_then_adjoint(self, grad_output: torch.Tensor, residual: torch.Tensor,
                              atoms: torch.Tensor, scale: float, bias_scale: float | None
                              ) -> torch.Tensor:
        """:meth:`add_analysis` then ``scale * D grad_output``, the gradient reaching the
        residual ``r``."""
        if not self._analysis_parameters(bias_scale):
            return self.backend.synthesis(grad_output, atoms * scale, residual.shape[-2:])
        bias = None if bias_scale is None else self.lam.new_zeros(self.lam.shape)
        grad_residual = self.backend.add_weight_gradient_then_synthesis(
            self.weight, grad_output, residual, scale, bias, atoms * scale)
        if bias is not None:
            self.lam.add_(bias, alpha=bias_scale)
        return grad_residual

    def synthesis_then_propagate(self, grad_signal: torch.Tensor, codes: torch.Tensor,
                                 atoms: torch.Tensor, epilogue: Epilogue) -> torch.Tensor:
        """``r = x - D v`` received ``grad_signal``: ``x`` gets it, ``W`` gets
        ``-d<g, D v>/dW``; returns ``v``'s gradient ``-D^T grad_signal`` finished by
        ``epilogue``."""
        if self.x is not None:
            self.x.add_(grad_signal)
        if not self.needs_weight:
            return self.backend.analysis(grad_signal, atoms, sign=-1.0, epilogue=epilogue)
        return self.backend.add_weight_gradient_then_analysis(
            self.weight, codes, grad_signal, -1.0, atoms, sign=-1.0, epilogue=epilogue)


def proximal_gradient_backward(grad_codes: torch.Tensor, x: torch.Tensor,
                               atoms: torch.Tensor, lam: torch.Tensor,
                               settings: ConvUnrolling, trace: Trace,
                               gradients: Gradients) -> None:
    """Accumulate into ``gradients`` the gradients of ``<grad_codes, a^k>`` (ISTA/FISTA)."""
    step = settings.step
    bias_scale = -step if settings.nonneg else None
    carry = None  # gradient reaching a^{t-1} through y^t (FISTA: -beta_t g_{y^t})
    grad = grad_codes
    masked = False  # grad already passed through the threshold's derivative
    for index in range(settings.n_iter - 1, -1, -1):
        grad_point, grad_theta = (grad, None) if masked else _threshold_backward(
            grad, trace.codes[index], settings.nonneg)
        if grad_theta is not None:
            gradients.lam.add_(grad_theta, alpha=step)
        point = trace.points[index]
        residual = trace.residuals[index]
        if point is None and not gradients.needs_x:
            gradients.add_analysis(grad_point, residual, atoms, step, bias_scale)
            break
        grad_residual = gradients.analysis_then_adjoint(grad_point, residual, atoms, step,
                                                        bias_scale)
        if point is None:
            gradients.x.add_(grad_residual)
            break
        beta = trace.betas[index]
        if settings.nonneg:
            # one pass: g_a = [a^{t-1} > 0] ((1 + beta) g_y + carry), carry' = -beta g_y
            # with g_y = grad_point - D^T grad_residual (y^{t-1} = (1 + beta) a^{t-1} -
            # beta a^{t-2}; beta = None: y^{t-1} = a^{t-1})
            side = None if beta is None else grad_point.new_empty(grad_point.shape)
            grad = gradients.synthesis_then_propagate(
                grad_residual, point, atoms, Epilogue(
                    addend=grad_point, mask=trace.codes[index - 1], extra=carry,
                    signal_scale=None if beta is None else 1.0 + beta.flatten(),
                    side=side, side_scale=None if beta is None else -beta.flatten()))
            carry, masked = side, True
            continue
        # signed codes: the next threshold's derivative also gives lam's gradient
        grad_extrapolated = gradients.synthesis_then_propagate(
            grad_residual, point, atoms, Epilogue(addend=grad_point))
        if beta is None:
            grad = grad_extrapolated if carry is None else grad_extrapolated.add_(carry)
            carry = None
        else:  # y^{t-1} = (1 + beta) a^{t-1} - beta a^{t-2}
            grad = torch.addcmul(grad_extrapolated, beta, grad_extrapolated)
            if carry is not None:
                grad.add_(carry)
            carry = grad_extrapolated.mul_(-beta)


def lca_backward(grad_codes: torch.Tensor, x: torch.Tensor, atoms: torch.Tensor,
                 lam: torch.Tensor, settings: ConvUnrolling, trace: Trace,
                 gradients: Gradients) -> None:
    """Accumulate into ``gradients`` the gradients of ``<grad_codes, a^k>`` (LCA)."""
    eta = settings.step
    grad_potential, grad_theta = _threshold_backward(grad_codes, trace.codes[-1],
                                                     settings.nonneg)
    if grad_theta is not None:
        gradients.lam.add_(grad_theta)
    for index in range(settings.n_iter - 1, 0, -1):
        codes = trace.points[index]  # a^{t-1}
        grad_residual = gradients.analysis_then_adjoint(
            grad_potential, trace.residuals[index], atoms, eta,
            -eta if settings.nonneg else None)
        if settings.nonneg:  # [a^{t-1} > 0] (eta g_w - D^T g_r) + (1 - eta) g_w, one pass
            grad_potential = gradients.synthesis_then_propagate(
                grad_residual, codes, atoms, Epilogue(
                    addend=grad_potential, inside=eta, mask=codes, outside=1.0 - eta))
            continue
        grad_codes_previous = gradients.synthesis_then_propagate(
            grad_residual, codes, atoms, Epilogue(addend=grad_potential, inside=eta))
        masked, grad_theta = _threshold_backward(grad_codes_previous, codes, settings.nonneg)
        gradients.lam.add_(grad_theta)
        grad_potential = masked.add_(grad_potential, alpha=1.0 - eta)
    _lca_first_step_backward(grad_potential, atoms, lam, settings, trace, gradients)


def _lca_first_step_backward(grad_potential: torch.Tensor, atoms: torch.Tensor,
                             lam: torch.Tensor, settings: ConvUnrolling, trace: Trace,
                             gradients: Gradients) -> None:
    """``w^1 = conv2d(x - D a^0, eta W, -lam + eta relu(-lam))``, ``a^0 = relu(-lam)`` one map
    broadcast over the batch: its gradients are formed on the batch sum (one signal)."""
    eta = settings.step
    initial = trace.initial_codes
    bias_sum = gradients.add_analysis(grad_potential, trace.residuals[0], atoms, eta,
                                      -1.0 if settings.nonneg else None)
    if initial is None and not gradients.needs_x:
        return
    size = trace.residuals[0].shape[-2:]
    grad_residual = None
    if gradients.x is not None:
        grad_residual = gradients.backend.synthesis(grad_potential, atoms * eta, size)
        gradients.x.add_(grad_residual)
    if initial is None:
        return
    negative = (lam < 0).to(lam.dtype)  # d relu(-lam) / d lam = -negative
    if bias_sum is not None:
        gradients.lam.sub_(eta * negative * bias_sum)
    # the rest is linear in the batch sum of grad_r: summed over the chunks, finished once by
    # lca_initial_codes_backward.  Without x's gradient, D is applied to the batch sum of
    # grad_w (one signal) rather than to every signal
    grad_signal = grad_residual.sum(0, keepdim=True) if grad_residual is not None else \
        gradients.backend.synthesis(grad_potential.sum(0, keepdim=True), atoms * eta, size)
    if gradients.initial_signal is None:
        gradients.initial_signal = grad_signal
    else:
        gradients.initial_signal.add_(grad_signal)


def lca_initial_codes_backward(initial: torch.Tensor, atoms: torch.Tensor, lam: torch.Tensor,
                               gradients: Gradients) -> None:
    """Gradients through ``x - D a^0`` from the batch sum ``sum_n grad_r`` of all chunks."""
    grad_signal = gradients.initial_signal
    negative = (lam < 0).to(lam.dtype)
    if gradients.needs_weight:
        gradients.backend.add_weight_gradient(gradients.weight, initial, grad_signal, -1.0)
    # a^0 received -D^T (sum_n grad_r), summed over positions
    through_codes = gradients.backend.analysis(grad_signal, atoms)
    gradients.lam.add_(negative * through_codes.sum(CHANNEL_AXES))


Backward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, ConvUnrolling,
                     Trace, Gradients], None]
BACKWARD: dict[str, Backward] = {"ista": proximal_gradient_backward,
                                 "fista": proximal_gradient_backward, "lca": lca_backward}
