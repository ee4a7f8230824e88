"""``sparse_code``: one entry point for every inference algorithm."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .._checks import (
    check_choice,
    check_positive_float,
    check_positive_int,
)
from ..dictionary import DenseDictionary
from .active_set import exact_lipschitz, shrinking_fista, uses_fast_dense_path
from .homotopy import homotopy_sparse_code
from .lca import lca
from .problem import SparseCodeResult, SparseCodingProblem, warn_not_converged
from .progress import make_monitor
from .proximal_gradient import proximal_gradient

__all__ = ["METHODS", "sparse_code"]

METHODS = ("closed_form", "ista", "fista", "lca", "homotopy")


def sparse_code(x: Any, D: Any, lam: Any, method: str = "fista", nonneg: bool = False,
                max_iter: int = 1000, tol: float = 1e-6, *, init: Any = None,
                step_size: float | None = None, restart: bool = True,
                return_history: bool = False, allow_negative_lam: bool = False,
                warn: bool = True, verbose: bool = False,
                callback: Callable[[int, dict[str, Any]], Any] | None = None,
                progress_every: int = 10, progress_interval: float = 2.0
                ) -> SparseCodeResult:
    """Solve ``min_a 1/2 ||x - D a||^2 + sum_i lam_i |a_i|`` (``a >= 0`` with ``nonneg``).

    Parameters
    ----------
    x : signals, batch first: ``(batch, n_features)`` for a dense dictionary (a single 1-D
        signal is accepted), ``(batch, C, H, W)`` for a :class:`ConvDictionary`.
    D : a :class:`~sparsecnn.DenseDictionary`, :class:`~sparsecnn.ConvDictionary` or a 2-D
        matrix ``(n_features, n_atoms)`` whose columns are atoms.
    lam : threshold, ``>= 0``: a scalar or a tensor broadcastable to the codes (per atom,
        per channel -- a 1-D tensor of length ``n_filters`` for a convolutional dictionary --
        or per coefficient).  No hidden rescaling.
    method : ``"closed_form"`` (one threshold of ``D^T x``, exact iff ``D^T D = I``),
        ``"ista"``, ``"fista"`` (with gradient restart), ``"lca"``, or ``"homotopy"``: the
        exact minimiser by the LARS-lasso path (dense dictionaries, ``lam > 0``, no autograd;
        :mod:`sparsecnn.inference.homotopy`), the fastest method for batches of small
        signals.
    nonneg : non-negative codes with penalty ``sum_i lam_i a_i`` (the ReLU model).
    max_iter : iteration budget of the iterative methods (for ``"homotopy"``: path segments
        per signal; a signal that needs more, or whose path is degenerate, is solved by FISTA
        with this budget).
    tol : stop when, for every signal, the relative change of the codes and the relative
        optimality gap are both ``<= tol`` (floored at 4 units of rounding of the dtype).
    init : initial codes (ISTA/FISTA) or initial potential (LCA); zeros by default.
    step_size : ``1/L`` by default for ISTA/FISTA (``L`` by power iteration); the Euler step
        ``dt/tau`` for LCA (default ``1/L``).
    restart : adaptive (gradient) restart of FISTA's momentum.
    return_history : record the energy after every iteration in ``result.history``.
    allow_negative_lam : opt in to the modified model of docs/theory.md A.4 (``nonneg=True`` only),
        where a negative threshold is a positive CNN bias (improper prior).
    warn : emit a :class:`ConvergenceWarning` when the budget runs out.
    verbose : print progress to stderr, like scikit-learn's ``verbose``: the iteration, the
        mean energy and the worst relative optimality gap (the stopping rule's), at most every
        ``progress_interval`` seconds and after the last iteration
        (:mod:`sparsecnn.inference.progress`).
    callback : ``callback(iteration, info)`` every ``progress_every`` iterations and after the
        last one, ``info`` holding ``energy``, ``gap``, ``elapsed`` (seconds), ``final`` and
        ``converged`` (``None`` until the end).  With ``verbose`` or ``callback``, dense FISTA
        runs the general loop (same iterates) instead of the fused fast path, whose batch
        shrinks as signals converge; ``"closed_form"`` and ``"homotopy"`` report once, at the
        end.

    Returns
    -------
    SparseCodeResult with ``codes``, ``energy``, ``n_iter``, ``converged``,
    ``optimality_gap`` and optionally ``history``.  Numpy in, numpy out.
    """
    check_choice(method, "method", METHODS)
    max_iter = check_positive_int(max_iter, "max_iter")
    tol = check_positive_float(tol, "tol")
    if step_size is not None:
        step_size = check_positive_float(step_size, "step_size")
    problem = SparseCodingProblem(x, D, lam, nonneg=nonneg,
                                  allow_negative_lam=allow_negative_lam)
    if method == "homotopy":
        _check_homotopy(problem, init, step_size, return_history)
    init_tensor = None if init is None else problem.as_codes(init, "init")
    tol = problem.effective_tol(tol)
    monitor = make_monitor(problem, method, max_iter, verbose, callback, progress_every,
                           progress_interval)

    orthogonality_gap, gap_lipschitz = None, None
    if method == "closed_form":
        codes = problem.threshold(problem.correlation)
        n_iter, history, step = 0, [problem.energy(codes)] if return_history else [], 1.0
        gap = problem.optimality_gap(codes)
        converged = bool(float(gap.max()) <= tol)
        orthogonality_gap = problem.D.orthogonality_gap(problem.signal_shape[1:])
    else:
        if method == "homotopy":
            run = homotopy_sparse_code(problem, max_iter=max_iter, tol=tol)
            # no step of its own: L (exact, from the small Gram eigenproblem) scales the gap
            gap_lipschitz = exact_lipschitz(problem.D.matrix)
            step = 1.0 / gap_lipschitz
        elif method == "lca":
            run = lca(problem, max_iter=max_iter, tol=tol, init=init_tensor,
                      step_size=step_size, return_history=return_history, monitor=monitor)
            step = run.step_size
        elif method == "fista" and monitor is None and uses_fast_dense_path(
                problem, init_tensor, return_history):
            # same iterates per signal, no autograd graph: screening, shrinking, fused products
            run = shrinking_fista(problem, max_iter=max_iter, tol=tol, init=init_tensor,
                                  step_size=step_size, restart=restart)
            step = run.step_size
            gap_lipschitz = 1.0 / step
        else:
            run = proximal_gradient(
                problem, accelerated=method == "fista", restart=restart, max_iter=max_iter,
                tol=tol, init=init_tensor, step_size=step_size, return_history=return_history,
                monitor=monitor)
            step = run.step_size
        codes, n_iter, converged, history = run.codes, run.n_iter, run.converged, run.history
        gap = problem.optimality_gap(codes, gap_lipschitz)
        if not converged and warn:
            warn_not_converged(method, max_iter, gap, tol)
    if monitor is not None:
        monitor.lipschitz = gap_lipschitz
        monitor(n_iter, codes, final=True, converged=converged)

    return SparseCodeResult(
        codes=problem.output(codes),
        energy=problem.output(problem.energy(codes)),
        n_iter=n_iter,
        converged=converged,
        optimality_gap=problem.output(gap.detach()),
        method=method,
        step_size=step,
        history=problem.output(torch.stack(history)) if return_history else None,
        orthogonality_gap=orthogonality_gap,
    )


def _check_homotopy(problem: SparseCodingProblem, init: Any, step_size: float | None,
                    return_history: bool) -> None:
    """What the exact path cannot do, said before any work."""
    if not isinstance(problem.D, DenseDictionary):
        raise ValueError(
            "method='homotopy' needs a dense dictionary (a DenseDictionary or a 2-D matrix); "
            f"got {type(problem.D).__name__}: use method='fista'")
    tensors = (problem.x, problem.D.weight, problem.lam)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        raise ValueError(
            "method='homotopy' is not differentiable (its codes come from a compiled path "
            "solver, not an autograd graph); got x, D or lam with requires_grad=True: use "
            "method='fista' or 'ista' to differentiate through the iterations")
    if init is not None:
        raise ValueError("init is not used by method='homotopy' (the path starts at a = 0 for "
                         "lam = max|D^T x|); got an init")
    if step_size is not None:
        raise ValueError("step_size is not used by method='homotopy' (the path has no step); "
                         f"got step_size={step_size!r}")
    if return_history:
        raise ValueError("return_history=True is not available for method='homotopy' (it has "
                         "no iterates, only path segments); got return_history=True")
