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
* the synthesis ``D a`` (``conv_transpose2d``, slow in oneDNN for few signal channels) is a
  matrix product ``W_mat^T a`` followed by the ``kh * kw`` strided patch sums of ``col2im``
  (:func:`conv_synthesis`);
* the forward runs without autograd, updating its own buffers in place, and one
  :class:`torch.autograd.Function` holds the whole k-step map with a hand-written backward
  (the chain rule of the iteration above, reverse order): per step it applies ``D`` and
  ``D^T`` once to the gradient and forms the weight gradients with
  ``aten.convolution_backward``; threshold masks are read from the saved codes (``a != 0``).

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

__all__ = ["ConvUnrolling", "conv_synthesis", "unrolled_conv_codes"]

_CHANNEL_AXES = (0, 2, 3)


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
    padded = codes.new_zeros(batch, channels,
                             max(height + 2 * pad_h, (code_height - 1) * stride_h + kernel_height),
                             max(width + 2 * pad_w, (code_width - 1) * stride_w + kernel_width))
    for row in range(kernel_height):
        for column in range(kernel_width):
            padded[:, :, row:row + (code_height - 1) * stride_h + 1:stride_h,
                   column:column + (code_width - 1) * stride_w + 1:stride_w].add_(
                patches[:, :, row, column])
    return padded[:, :, pad_h:pad_h + height, pad_w:pad_w + width]


@dataclass(frozen=True)
class ConvUnrolling:
    """The fixed settings of one k-step map: ``method`` in ``ista``/``fista``/``lca``,
    ``n_iter >= 1``, step ``1/lipschitz``, FISTA ``restart``, ``nonneg``, and the geometry."""

    method: str
    n_iter: int
    lipschitz: float
    nonneg: bool
    restart: bool
    stride: tuple[int, int]
    padding: tuple[int, int]

    @property
    def step(self) -> float:
        return 1.0 / self.lipschitz


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


def _soft_threshold_(values: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """``S_theta(p) = p - clamp(p, -theta, theta)`` in place (``theta >= 0`` per channel)."""
    bound = theta.view(1, -1, 1, 1)
    return values.sub_(torch.clamp(values, min=-bound, max=bound))


def _momentum_step(new_codes: torch.Tensor, codes: torch.Tensor, extrapolated: torch.Tensor,
                   momentum: torch.Tensor, restart: bool, plain: bool
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``fista_momentum`` (same restart rule) returning ``(y, s_next, beta)`` with
    ``beta = None`` when every ``beta`` is 0 (then ``y = a``).  ``plain``: the previous
    extrapolation was the identity, so the restart test cannot fire."""
    difference = None
    if restart and not plain:
        difference = new_codes - codes
        direction = torch.linalg.vecdot((extrapolated - new_codes).flatten(1),
                                        difference.flatten(1))
        momentum = torch.where(direction > 0, torch.ones_like(momentum), momentum)
    next_momentum = (1.0 + torch.sqrt(1.0 + 4.0 * momentum ** 2)) / 2.0
    beta = ((momentum - 1.0) / next_momentum).view(-1, 1, 1, 1)
    if not bool(beta.ne(0).any()):
        return new_codes, next_momentum, None
    if difference is None:  # one pass: a^{t-1} + (1 + beta)(a^t - a^{t-1})
        return torch.lerp(codes, new_codes, 1.0 + beta), next_momentum, beta
    return torch.addcmul(new_codes, beta, difference), next_momentum, beta


def _proximal_gradient_forward(x: torch.Tensor, atoms: torch.Tensor, lam: torch.Tensor,
                               settings: ConvUnrolling, trace: _Trace | None) -> torch.Tensor:
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
        residual = x if extrapolated is None else x - conv_synthesis(
            extrapolated, atoms, settings.stride, settings.padding, size)
        new_codes = F.conv2d(residual, scaled, bias, settings.stride, settings.padding)
        if settings.nonneg:
            if extrapolated is None:
                new_codes.relu_()
            else:
                torch.ops.aten._add_relu_(new_codes, extrapolated)
        else:
            if extrapolated is not None:
                new_codes.add_(extrapolated)
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
                plain=beta is None)
        else:
            extrapolated = new_codes
        codes = new_codes
    return codes


def _lca_forward(x: torch.Tensor, atoms: torch.Tensor, lam: torch.Tensor,
                 settings: ConvUnrolling, trace: _Trace | None) -> torch.Tensor:
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
        residual = x - conv_synthesis(initial, atoms, settings.stride, settings.padding, size)
        first_bias = -lam + eta * torch.relu(-lam)
    if trace is not None:
        trace.initial_codes = initial
    codes = potential = None
    for iteration in range(settings.n_iter):
        if iteration:
            residual = x - conv_synthesis(codes, atoms, settings.stride, settings.padding, size)
            new_potential = F.conv2d(residual, scaled, bias, settings.stride, settings.padding)
            # (1 - eta) w + eta relu(w) = leaky_relu(w, 1 - eta): one pass (w is not kept)
            potential = new_potential.add_(
                F.leaky_relu_(potential, 1.0 - eta) if settings.nonneg else
                potential.mul_(1.0 - eta).add_(codes, alpha=eta))
        else:
            potential = F.conv2d(residual, scaled, first_bias, settings.stride,
                                 settings.padding)
        new_codes = torch.relu(potential) if settings.nonneg else _soft_threshold_(
            potential.clone(), lam)
        if trace is not None:
            trace.residuals.append(residual)
            trace.points.append(codes)
            trace.codes.append(new_codes)
        codes = new_codes
    return codes


def _lca_initial_codes(atoms: torch.Tensor, lam: torch.Tensor, settings: ConvUnrolling,
                       size: Sequence[int]) -> torch.Tensor | None:
    """``a^0 = T(u^0 = 0)`` as one code map ``(1, K, H', W')`` (the same for every signal):
    ``relu(-lam)`` per channel, ``None`` when it is zero (``lam >= 0`` or signed codes)."""
    if not settings.nonneg or not bool((lam < 0).any()):
        return None
    code_size = [(size[axis] + 2 * settings.padding[axis] - atoms.shape[2 + axis])
                 // settings.stride[axis] + 1 for axis in (0, 1)]
    return torch.relu(-lam).view(1, -1, 1, 1).expand(1, -1, *code_size).contiguous()


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
    if nonneg:
        return torch.ops.aten.threshold_backward(grad, codes, 0), None
    masked = torch.where(codes != 0, grad, grad.new_zeros(()))
    return masked, -(masked * codes.sign()).sum(_CHANNEL_AXES)


class _Gradients:
    """Accumulators of the gradients with respect to ``x``, ``W`` and ``lam``."""

    def __init__(self, x: torch.Tensor, atoms: torch.Tensor, lam: torch.Tensor,
                 needs: tuple[bool, bool, bool]) -> None:
        self.needs_x, self.needs_weight, self.needs_lam = needs
        self.x = torch.zeros_like(x) if self.needs_x else None
        self.weight = torch.zeros_like(atoms)
        self.lam = torch.zeros_like(lam)

    def add_analysis(self, grad_output: torch.Tensor, residual: torch.Tensor,
                     atoms: torch.Tensor, settings: ConvUnrolling, scale: float,
                     bias_scale: float | None) -> torch.Tensor | None:
        """``z = conv2d(r, scale W, bias_scale * lam)`` received ``grad_output``; returns the
        per-channel sum of ``grad_output`` when there is a bias."""
        if not (self.needs_weight or (self.needs_lam and bias_scale is not None)):
            return None
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
            weight, _ = _weight_gradient(codes, grad_signal, atoms, settings, False)
            self.weight.sub_(weight)


def _analysis_adjoint(grad_output: torch.Tensor, atoms: torch.Tensor, scale: float,
                      settings: ConvUnrolling, size: Sequence[int]) -> torch.Tensor:
    """``scale * D grad_output``: the gradient reaching the residual of ``conv2d(r, scale W)``."""
    return conv_synthesis(grad_output, atoms * scale, settings.stride, settings.padding, size)


def _proximal_gradient_backward(grad_codes: torch.Tensor, x: torch.Tensor,
                                atoms: torch.Tensor, lam: torch.Tensor,
                                settings: ConvUnrolling, trace: _Trace,
                                gradients: _Gradients) -> None:
    step = settings.step
    size = x.shape[-2:]
    negated = -atoms
    carry = None  # gradient reaching a^{t-1} through y^t (FISTA: -beta_t g_{y^t})
    grad = grad_codes
    for index in range(settings.n_iter - 1, -1, -1):
        grad_point, grad_theta = _threshold_backward(grad, trace.codes[index], settings.nonneg)
        if grad_theta is not None:
            gradients.lam.add_(grad_theta, alpha=step)
        gradients.add_analysis(grad_point, trace.residuals[index], atoms, settings, step,
                               -step if settings.nonneg else None)
        point = trace.points[index]
        if point is None and not gradients.needs_x:
            break
        grad_residual = _analysis_adjoint(grad_point, atoms, step, settings, size)
        if point is None:
            gradients.x.add_(grad_residual)
            break
        gradients.add_synthesis(grad_residual, point, atoms, settings)
        # y^{t-1} received grad_point directly and -D^T grad_residual through r
        grad_extrapolated = F.conv2d(grad_residual, negated, None, settings.stride,
                                     settings.padding).add_(grad_point)
        beta = trace.betas[index]
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
    negated = -atoms
    grad_potential, grad_theta = _threshold_backward(grad_codes, trace.codes[-1],
                                                     settings.nonneg)
    if grad_theta is not None:
        gradients.lam.add_(grad_theta)
    for index in range(settings.n_iter - 1, 0, -1):
        codes = trace.points[index]  # a^{t-1}
        gradients.add_analysis(grad_potential, trace.residuals[index], atoms, settings, eta,
                               -eta if settings.nonneg else None)
        grad_residual = _analysis_adjoint(grad_potential, atoms, eta, settings, size)
        gradients.add_synthesis(grad_residual, codes, atoms, settings)
        grad_codes_previous = F.conv2d(grad_residual, negated, None, settings.stride,
                                       settings.padding).add_(grad_potential, alpha=eta)
        masked, grad_theta = _threshold_backward(grad_codes_previous, codes, settings.nonneg)
        if grad_theta is not None:
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
    grad_residual = _analysis_adjoint(grad_potential, atoms, eta, settings,
                                      trace.residuals[0].shape[-2:])
    if gradients.x is not None:
        gradients.x.add_(grad_residual)
    if initial is None:
        return
    negative = (lam < 0).to(lam.dtype)  # d relu(-lam) / d lam = -negative
    if bias_sum is not None:
        gradients.lam.sub_(eta * negative * bias_sum)
    grad_signal = grad_residual.sum(0, keepdim=True)
    if gradients.needs_weight:
        weight, _ = _weight_gradient(initial, grad_signal, atoms, settings, False)
        gradients.weight.sub_(weight)
    # a^0 received -D^T (sum_n grad_r), summed over positions
    through_codes = F.conv2d(grad_signal, atoms, None, settings.stride, settings.padding)
    gradients.lam.add_(negative * through_codes.sum(_CHANNEL_AXES))


_FORWARD = {"ista": _proximal_gradient_forward, "fista": _proximal_gradient_forward,
            "lca": _lca_forward}
_BACKWARD = {"ista": _proximal_gradient_backward, "fista": _proximal_gradient_backward,
             "lca": _lca_backward}


class _UnrolledConvCoding(torch.autograd.Function):
    """``a^k(x, W, lam)`` with the backward of module docstring (first-order only)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, atoms: torch.Tensor, lam: torch.Tensor,
                settings: ConvUnrolling) -> torch.Tensor:
        trace = _Trace([], [], [], [])
        codes = _FORWARD[settings.method](x, atoms, lam, settings, trace)
        ctx.settings = settings
        ctx.trace = trace
        ctx.save_for_backward(x, atoms, lam)
        return codes

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_codes: torch.Tensor
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, None]:
        x, atoms, lam = ctx.saved_tensors
        needs = tuple(ctx.needs_input_grad[:3])
        gradients = _Gradients(x, atoms, lam, needs)
        _BACKWARD[ctx.settings.method](grad_codes.contiguous(), x, atoms, lam, ctx.settings,
                                       ctx.trace, gradients)
        return (gradients.x, gradients.weight if needs[1] else None,
                gradients.lam if needs[2] else None, None)


def unrolled_conv_codes(x: torch.Tensor, atoms: torch.Tensor, lam: torch.Tensor,
                        settings: ConvUnrolling) -> torch.Tensor:
    """The k-th iterate ``a^k`` of ``settings.method`` on the convolutional sparse-coding
    energy with unit-norm ``atoms`` ``(K, C, kh, kw)`` and per-channel thresholds ``lam``
    ``(K,)`` (module docstring); differentiable in ``x``, ``atoms`` and ``lam``.

    Signed codes need ``lam >= 0`` (a negative weight of ``|a|`` makes the energy unbounded
    below); :func:`sparsecnn.nn.sparse_conv2d` sends that case to the engine loop.
    """
    if not settings.nonneg and bool((lam < 0).any()):
        raise ValueError(f"lam must be >= 0 for signed codes; got minimum {float(lam.min()):.6g}")
    x = x.contiguous()
    if torch.is_grad_enabled() and (x.requires_grad or atoms.requires_grad or
                                    lam.requires_grad):
        return _UnrolledConvCoding.apply(x, atoms, lam, settings)
    with torch.no_grad():
        return _FORWARD[settings.method](x, atoms, lam, settings, None)
