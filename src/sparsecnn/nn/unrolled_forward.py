"""The k steps of ISTA/FISTA/LCA on the convolutional sparse-coding energy, from ``a^0 = 0``.

The same iterates as the engine loops (:func:`~sparsecnn.inference.proximal_gradient.
proximal_gradient` and :func:`~sparsecnn.inference.lca.lca` with ``tol=None``, step ``1/L``,
from ``a^0 = 0``; docs/theory.md A.8), written with fewer passes over the codes: the residual
``r = x - D v`` is formed in signal space (``C`` channels, not ``K``), so one analysis
convolution gives ``D^T x - D^T D v`` and, through its ``bias`` argument, the threshold
offset.  Non-negative ISTA/FISTA, with ``theta = lam/L``::

    a^{t+1} = relu(y^t + conv2d(x - D y^t, W/L, bias=-theta)),   y^0 = a^0 = 0

FISTA's ``y^t = a^t + beta_t (a^t - a^{t-1})`` (gradient restart of ``fista_momentum``).
LCA on the shifted potential ``w = u - lam`` (``a = relu(w)``, ``eta = 1/L``)::

    w^{t+1} = (1 - eta) w^t + eta a^t + conv2d(x - D a^t, eta W, bias=-eta lam)

Signed codes use the soft threshold ``S_theta(p) = p - clamp(p, -theta, theta)``.  What
follows each convolution (the bias, ``+ y`` and ``relu`` of a step, LCA's
``(1 - eta) w + eta relu(w)`` and its codes ``relu(w)``, FISTA's restart test
``<y - a^t, a^t - a^{t-1}>``, the layer's output scale) is the convolution's
:class:`~sparsecnn.nn.backends.Epilogue`, one pass with the native kernels.  The forward runs
without autograd, updating its own buffers in place, and records in a :class:`Trace` what
:mod:`~sparsecnn.nn.unrolled_backward` needs.

FISTA's momentum coefficients and restart decisions are piecewise constant in the inputs, so
they carry no gradient (as in the autograd path).  The first extrapolation has ``beta = 0``,
and a restart test right after an identity extrapolation (``y = a``) reads
``<a^{t-1} - a^t, a^t - a^{t-1}> <= 0``: both are skipped exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .backends import ConvBackend, Epilogue
from .unrolling import ConvUnrolling, code_size

__all__ = ["FORWARD", "OutputScaling", "Trace", "lca_forward", "lca_initial_codes",
           "proximal_gradient_forward"]


@dataclass
class OutputScaling:
    """Where the last step writes ``scales * a^k``: the chunk's slice ``out`` of the layer's
    output (non-negative codes and ``scales > 0``, so that ``s a^k`` keeps the support the
    backward reads from the saved final codes)."""

    scales: torch.Tensor
    out: torch.Tensor


@dataclass
class Trace:
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


def soft_threshold_(values: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
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
    wrote ``a^t``."""
    difference = None
    if restart and not plain and direction is None:
        difference = new_codes - codes
        # <y - a^t, d> as two dot products: no code-sized temporary for y - a^t
        flat_difference = difference.flatten(1)
        direction = (torch.linalg.vecdot(extrapolated.flatten(1), flat_difference) -
                     torch.linalg.vecdot(new_codes.flatten(1), flat_difference))
    if restart and not plain:
        momentum = torch.where(direction > 0, torch.ones_like(momentum), momentum)
    next_momentum = (1.0 + torch.sqrt(1.0 + 4.0 * momentum ** 2)) / 2.0
    beta = ((momentum - 1.0) / next_momentum).view(-1, 1, 1, 1)
    if not bool(beta.ne(0).any()):
        return new_codes, next_momentum, None
    if difference is None:  # one pass: a^{t-1} + (1 + beta)(a^t - a^{t-1})
        return torch.lerp(codes, new_codes, 1.0 + beta), next_momentum, beta
    return torch.addcmul(new_codes, beta, difference, out=difference), next_momentum, beta


def proximal_gradient_forward(x: torch.Tensor, atoms: torch.Tensor, lam: torch.Tensor,
                              settings: ConvUnrolling, backend: ConvBackend,
                              trace: Trace | None, final: OutputScaling | None = None
                              ) -> torch.Tensor:
    """ISTA/FISTA's ``a^k`` (module docstring); the last step writes ``final`` when given."""
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
        residual = x if extrapolated is None else backend.synthesis(extrapolated, atoms, size,
                                                                    signal=x)
        last = final if iteration == settings.n_iter else None
        # FISTA's restart test after this step, formed by the pass that writes a^t (the
        # soft threshold of signed codes comes after that pass)
        direction = None
        if (accelerated and settings.restart and beta is not None and settings.nonneg and
                iteration < settings.n_iter):
            direction = x.new_empty(x.shape[0])
        new_codes = backend.analysis(residual, scaled, bias, epilogue=Epilogue(
            addend=extrapolated, relu=settings.nonneg,
            scale=None if last is None else last.scales,
            out=None if last is None else last.out,
            previous=None if direction is None else codes, direction=direction))
        if not settings.nonneg:
            soft_threshold_(new_codes, theta)
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


def lca_initial_codes(atoms: torch.Tensor, lam: torch.Tensor, settings: ConvUnrolling,
                      size: Sequence[int]) -> torch.Tensor | None:
    """``a^0 = T(u^0 = 0)`` as one code map ``(1, K, H', W')`` (the same for every signal):
    ``relu(-lam)`` per channel, ``None`` when it is zero (``lam >= 0`` or signed codes)."""
    if not settings.nonneg or not bool((lam < 0).any()):
        return None
    return torch.relu(-lam).view(1, -1, 1, 1).expand(
        1, -1, *code_size(size, atoms, settings)).contiguous()


def lca_forward(x: torch.Tensor, atoms: torch.Tensor, lam: torch.Tensor,
                settings: ConvUnrolling, backend: ConvBackend, trace: Trace | None,
                final: OutputScaling | None = None) -> torch.Tensor:
    """LCA's ``a^k`` (module docstring); the last step writes ``final`` when given."""
    eta = settings.step
    scaled = atoms * eta
    bias = -eta * lam if settings.nonneg else None
    size = x.shape[-2:]
    # potential u (signed) or shifted potential w = u - lam (non-negative); u^0 = 0, so
    # w^1 = (1 - eta)(-lam) + eta a^0 + conv2d(x - D a^0, eta W, -eta lam)
    #     = conv2d(x - D a^0, eta W, -lam + eta relu(-lam)),  a^0 = relu(-lam) per channel
    initial = lca_initial_codes(atoms, lam, settings, size)
    residual, first_bias = x, None if bias is None else -lam
    if initial is not None:
        residual = backend.synthesis(initial, atoms, size, signal=x)
        first_bias = -lam + eta * torch.relu(-lam)
    if trace is not None:
        trace.initial_codes = initial
    codes = potential = None
    for iteration in range(settings.n_iter):
        # the last potential is not kept: its codes s relu(w) are written in the same pass
        last = final if iteration == settings.n_iter - 1 else None
        scaling = {} if last is None else {"scale": last.scales, "out": last.out}
        # non-negative: the pass that writes w^{t+1} also writes a^{t+1} = relu(w^{t+1})
        codes_out = None if last is not None or not settings.nonneg else x.new_empty(
            (x.shape[0], atoms.shape[0], *code_size(size, atoms, settings)))
        if iteration:
            residual = backend.synthesis(codes, atoms, size, signal=x)
            if settings.nonneg:  # (1 - eta) w + eta relu(w), read as the addend
                # w^t is not kept: w^{t+1} overwrites it (each output reads only its own
                # position of the addend), in a buffer that is already in cache
                if last is None:
                    scaling = {"out": potential}
                potential = backend.analysis(residual, scaled, bias, epilogue=Epilogue(
                    addend=potential, relu=last is not None, inside=1.0 - eta,
                    inside_relu=eta, rectified=codes_out, **scaling))
            else:
                potential = backend.analysis(residual, scaled, bias, epilogue=Epilogue(
                    addend=potential.mul_(1.0 - eta).add_(codes, alpha=eta)))
        else:
            potential = backend.analysis(residual, scaled, first_bias, epilogue=Epilogue(
                relu=last is not None, rectified=codes_out, **scaling))
        if last is not None:
            new_codes = potential
        elif settings.nonneg:
            new_codes = codes_out
        else:
            new_codes = soft_threshold_(potential.clone(), lam)
        if trace is not None:
            trace.residuals.append(residual)
            trace.points.append(codes)
            trace.codes.append(new_codes)
        codes = new_codes
    return codes


Forward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, ConvUnrolling, ConvBackend,
                    "Trace | None", "OutputScaling | None"], torch.Tensor]
FORWARD: dict[str, Forward] = {"ista": proximal_gradient_forward,
                               "fista": proximal_gradient_forward, "lca": lca_forward}
