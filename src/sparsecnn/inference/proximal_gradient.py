"""ISTA and FISTA for the (non-negative) sparse-coding energy (docs/theory.md A.8, C4).

ISTA (projected for ``nonneg``), with ``L = ||D||_2^2`` and step ``1/L``::

    a^{t+1} = T_{lam/L}( a^t - (1/L) D^T (D a^t - x) )

where ``T`` is the soft threshold (signed) or ``relu(v - lam/L)`` (non-negative).  FISTA
(Beck & Teboulle 2009) evaluates the same step at the extrapolated point
``y^t = a^t + ((s_{t-1} - 1)/s_t) (a^t - a^{t-1})``, ``s_t = (1 + sqrt(1 + 4 s_{t-1}^2)) / 2``,
and with ``restart=True`` resets the momentum of a signal whenever
``<y^{t-1} - a^t, a^t - a^{t-1}> > 0`` (gradient restart, O'Donoghue & Candes 2015).

Per-iteration statistics: the relative change ``||a^{t+1} - a^t|| / ||a^{t+1}||`` of every
signal, and, once every change is below ``tol``, the relative optimality gap
(:meth:`SparseCodingProblem.optimality_gap`).  The solver stops when both are ``<= tol`` for
every signal of the batch.  ISTA's energy is non-increasing; the function-value bounds are
``E(a^k) - E* <= L ||a^0 - a*||^2 / (2k)`` (ISTA) and ``2 L ||a^0 - a*||^2 / (k+1)^2``
(FISTA without restart).

Every update builds new tensors (no in-place operation), so autograd differentiates through
the iterations.  With ``tol=None`` the loop runs a fixed number of steps: the forward pass of
:class:`sparsecnn.nn.SparseConv2d` with ``n_iter=k``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .problem import SolverRun, SparseCodingProblem, check_iterate

__all__ = ["proximal_gradient"]


def _relative_change(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    difference = torch.linalg.vector_norm((new - old).flatten(1), dim=1)
    size = torch.linalg.vector_norm(new.flatten(1), dim=1)
    return difference / torch.clamp(size, min=torch.finfo(new.dtype).tiny)


def fista_momentum(new_codes: torch.Tensor, codes: torch.Tensor, extrapolated: torch.Tensor,
                   momentum: torch.Tensor, restart: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """FISTA's extrapolation ``y = a^{t+1} + ((s_t - 1)/s_{t+1})(a^{t+1} - a^t)`` per signal,
    resetting ``s_t = 1`` where ``<y^t - a^{t+1}, a^{t+1} - a^t> > 0`` when ``restart``."""
    difference = new_codes - codes
    if restart:
        direction = torch.linalg.vecdot((extrapolated - new_codes).flatten(1),
                                        difference.flatten(1))
        momentum = torch.where(direction > 0, torch.ones_like(momentum), momentum)
    next_momentum = (1.0 + torch.sqrt(1.0 + 4.0 * momentum ** 2)) / 2.0
    beta = ((momentum - 1.0) / next_momentum).view((-1,) + (1,) * (codes.ndim - 1))
    return torch.addcmul(new_codes, beta, difference), next_momentum


def proximal_gradient(problem: SparseCodingProblem, *, accelerated: bool, restart: bool,
                      max_iter: int, tol: float | None, init: torch.Tensor | None,
                      step_size: float | None, return_history: bool = False,
                      monitor: Callable[[int, torch.Tensor], None] | None = None) -> SolverRun:
    """Run ISTA (``accelerated=False``) or FISTA from ``init`` (zeros by default); the step
    used is ``1/L`` unless ``step_size`` is given.

    ``tol=None`` runs exactly ``max_iter`` steps with no stopping test and no scan of the
    iterates (the fixed-depth forward pass of a sparse-coding layer).  ``monitor(iteration,
    codes)`` is called after every step (progress, :mod:`sparsecnn.inference.progress`).
    """
    lipschitz = problem.lipschitz() if step_size is None else 1.0 / step_size
    step = 1.0 / lipschitz
    method = "fista" if accelerated else "ista"
    at_zero = init is None  # the first gradient is then -D^T x: no convolution needed
    codes = torch.zeros(problem.code_shape, dtype=problem.x.dtype, device=problem.x.device) \
        if init is None else init
    # Non-negative codes: a - (1/L)(D^T D a - D^T x) - lam/L = a - (1/L) D^T D a + offset with
    # offset = (D^T x - lam)/L formed once, so a step costs three passes over the codes.
    offset = step * (problem.correlation - problem.lam) if problem.nonneg else None
    extrapolated = codes
    momentum = torch.ones(codes.shape[0], dtype=codes.dtype, device=codes.device)
    history = [problem.energy(codes)] if return_history else []
    converged = False
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        first = at_zero and n_iter == 1
        if offset is not None:
            new_codes = torch.relu(offset) if first else torch.relu(
                extrapolated + torch.add(offset, problem.normal(extrapolated), alpha=-step))
        else:
            point = step * problem.correlation if first else \
                extrapolated - step * problem.gradient(extrapolated)
            new_codes = problem.threshold(point, step)
        if accelerated and not (tol is None and n_iter == max_iter):  # last one unused
            extrapolated, momentum = fista_momentum(new_codes, codes, extrapolated, momentum,
                                                    restart)
        else:
            extrapolated = new_codes
        previous, codes = codes, new_codes
        if return_history:
            history.append(problem.energy(codes))
        if monitor is not None:
            monitor(n_iter, codes)
        if tol is not None and problem.has_converged(
                _relative_change(codes, previous), codes, lipschitz, tol, method, n_iter):
            converged = True
            break
    if tol is not None:
        check_iterate(codes, method, n_iter)
    return SolverRun(codes, n_iter, converged, step, history)
