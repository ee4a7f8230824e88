"""Locally competitive algorithm (Rozell et al. 2008; docs/theory.md A.8, C6).

Explicit Euler integration, with ``eta = dt / tau``, of::

    tau du/dt = D^T x - u - (D^T D - I) a,    a = T_lam(u)

where ``T`` is the soft threshold (signed) or ``relu(u - lam)`` (non-negative).  The term
``-(D^T D - I) a`` is lateral inhibition between units whose atoms overlap.  Fixed points
satisfy ``a = T_lam(a - D^T (D a - x))``, the optimality condition of the energy, so the
steady state is the LASSO minimiser.  The Euler scheme is stable for ``eta < 2 / L``; the
default ``eta = 1 / L``.

Per-iteration statistics: the relative change of ``a`` and, once it is below ``tol``, the
relative optimality gap; both ``<= tol`` stops the integration.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .problem import SolverRun, SparseCodingProblem, check_iterate
from .proximal_gradient import _relative_change

__all__ = ["lca"]


def lca(problem: SparseCodingProblem, *, max_iter: int, tol: float | None,
        init: torch.Tensor | None, step_size: float | None, return_history: bool = False,
        lipschitz: float | None = None,
        monitor: Callable[[int, torch.Tensor], None] | None = None) -> SolverRun:
    """Integrate the LCA dynamics; ``init`` is the initial membrane potential ``u``.

    ``tol=None`` runs exactly ``max_iter`` Euler steps with no stopping test (a layer's forward
    pass); ``lipschitz`` may be given when already known; ``monitor(iteration, codes)`` is
    called after every step (progress, :mod:`sparsecnn.inference.progress`).
    """
    if lipschitz is None:
        lipschitz = problem.lipschitz()
    eta = 1.0 / lipschitz if step_size is None else step_size
    potential = torch.zeros(problem.code_shape, dtype=problem.x.dtype, device=problem.x.device) \
        if init is None else init
    codes = problem.threshold(potential)
    history = [problem.energy(codes)] if return_history else []
    converged = False
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        # u + eta (D^T x - u - D^T D a + a) = lerp(u, D^T x + a - D^T D a, eta)
        target = problem.correlation + (codes - problem.normal(codes))
        potential = torch.lerp(potential, target, eta)
        previous, codes = codes, problem.threshold(potential)
        if return_history:
            history.append(problem.energy(codes))
        if monitor is not None:
            monitor(n_iter, codes)
        if tol is not None and problem.has_converged(
                _relative_change(codes, previous), codes, lipschitz, tol, "lca", n_iter):
            converged = True
            break
    if tol is not None:
        check_iterate(codes, "lca", n_iter)
    return SolverRun(codes, n_iter, converged, eta, history)
