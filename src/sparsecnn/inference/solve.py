"""``sparse_code``: one entry point for every inference algorithm."""

from __future__ import annotations

import math
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

__all__ = ["CHUNK_ALIGNMENT", "LOW_PRECISION", "MAX_CHUNK_BYTES", "METHODS", "chunk_rows",
           "sparse_code"]

METHODS = ("closed_form", "ista", "fista", "lca", "homotopy")
# Dtypes solved in float32 (docs/reliability.md "Numerics and memory"): their rounding
# (2^-11, 2^-8) is above any tolerance a solver could honestly meet.
LOW_PRECISION = (torch.float16, torch.bfloat16)
# Bound on the working set of one chunk of signals: a batch is solved chunk by chunk (every
# signal is an independent problem), so memory no longer grows with the batch size.
MAX_CHUNK_BYTES = 256 << 20
# Signal- plus code-sized arrays one signal occupies while a solver runs (x, D^T x, the
# iterate, the extrapolated point, the new iterate, their difference, the gradient, ...),
# with room for temporaries.
WORKING_ARRAYS = 16
# Chunks hold a multiple of this many signals (when the bound allows that many): the matrix
# products of BLAS libraries treat rows in tiles of 4 to 48 rows with a different kernel for
# a partial tile, so aligned chunks give every row the arithmetic of the whole batch.
CHUNK_ALIGNMENT = 192


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
        signal is accepted), ``(batch, C, H, W)`` for a :class:`ConvDictionary`.  A tensor or
        a floating numpy array must have ``D``'s dtype (``TypeError`` naming both
        otherwise); an empty batch gives empty results with ``converged=True``,
        ``n_iter=0``.
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
    nonneg : non-negative codes with penalty ``sum_i lam_i a_i`` (the ReLU model); a bool
        (or numpy bool), ``TypeError`` otherwise.
    max_iter : iteration budget of the iterative methods (for ``"homotopy"``: path segments
        per signal, clamped to ``2^63 - 1``; a signal that needs more, or whose path is
        degenerate, is solved by FISTA with this budget).
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

    Notes
    -----
    **float16/bfloat16** are solved in float32: their rounding (``2^-11``, ``2^-8``) is above
    any tolerance an iteration in them could honestly meet (bfloat16 FISTA used to report
    ``converged=True`` with codes off by 1.29).  ``converged``, ``optimality_gap``,
    ``energy`` and ``history`` are those of the float32 solution (float32 tensors); the codes
    are that solution rounded to the input's dtype.

    **Memory:** every signal is an independent problem, so the batch is solved in chunks of
    :func:`chunk_rows` signals, whose working set is at most :data:`MAX_CHUNK_BYTES`
    (256 MiB), aligned to :data:`CHUNK_ALIGNMENT` signals.  The codes are then those of the
    whole batch at once to the last bit for ``closed_form`` and ``homotopy``, and for ISTA,
    FISTA and LCA whenever every chunk runs the same iterations.  ISTA, LCA and
    convolutional or differentiable FISTA stop when a whole chunk meets the rule, so a chunk
    may stop before the whole batch would have (every signal still meets the rule); dense
    FISTA stops per signal, so its codes agree to rounding (its shrinking batches change the
    row tiling of the products).  ``n_iter`` is the largest over chunks.
    With ``return_history=True`` the batch is solved at once (the history is per iteration
    of the whole batch).  See docs/reliability.md, "Numerics and memory".
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
    input_dtype = problem.x.dtype
    if input_dtype in LOW_PRECISION:
        # a float16/bfloat16 iteration cannot judge its own convergence (its rounding is
        # above any useful tol): solve and judge in float32, round the codes at the end
        problem = problem.with_dtype(torch.float32)
        init_tensor = None if init_tensor is None else init_tensor.to(torch.float32)
    tol = problem.effective_tol(tol)
    monitor = make_monitor(problem, method, max_iter, verbose, callback, progress_every,
                           progress_interval)

    orthogonality_gap = None
    if method == "closed_form":
        orthogonality_gap = problem.D.orthogonality_gap(problem.signal_shape[1:])
    n_signals = problem.signal_shape[0]
    # a history or a progress report follows the whole batch's iterations: solved at once
    rows = n_signals if return_history or monitor is not None else chunk_rows(problem)
    parts, n_iter, converged, step, history, gap_lipschitz = [], 0, True, None, [], None
    for start in range(0, n_signals, max(rows, 1)):
        chunk = problem if rows >= n_signals else problem.rows(start, start + rows)
        chunk_init = None if init_tensor is None or chunk is problem else \
            init_tensor[start:start + rows]
        part = _solve(chunk, method, max_iter, tol, chunk_init, step_size, restart,
                      return_history, monitor)
        parts.append(part[:3])
        n_iter, converged = max(n_iter, part[3]), converged and part[4]
        step, history, gap_lipschitz = part[5], part[6], part[7]
    if not parts:  # an empty batch: nothing to solve, like nn.Conv2d on zero images
        empty = torch.zeros(problem.code_shape, dtype=problem.x.dtype, device=problem.x.device)
        values = torch.zeros(0, dtype=problem.x.dtype, device=problem.x.device)
        parts = [(empty, values, values)]
        step = _empty_batch_step(problem, method, step_size)
        history = [values] if return_history else []
    codes, energies, gap = (torch.cat(column) for column in zip(*parts, strict=True))
    if not converged and warn:
        warn_not_converged(method, max_iter, gap, tol)
    if monitor is not None:
        monitor.lipschitz = gap_lipschitz
        monitor(n_iter, codes, final=True, converged=converged)

    return SparseCodeResult(
        codes=problem.output(codes.to(input_dtype)),
        energy=problem.output(energies),
        n_iter=n_iter,
        converged=converged,
        optimality_gap=problem.output(gap.detach()),
        method=method,
        step_size=step,
        history=problem.output(torch.stack(history)) if return_history else None,
        orthogonality_gap=orthogonality_gap,
    )


def chunk_rows(problem: SparseCodingProblem) -> int:
    """Signals per chunk: the working set of every solver is a few dozen signal- and
    code-sized arrays per signal (:data:`WORKING_ARRAYS`), so chunks of this many signals keep
    it under :data:`MAX_CHUNK_BYTES` whatever the batch size (at least one signal), rounded
    down to a multiple of :data:`CHUNK_ALIGNMENT` when at least that many fit."""
    per_signal = problem.x.element_size() * WORKING_ARRAYS * (
        math.prod(problem.signal_shape[1:]) + math.prod(problem.code_shape[1:]))
    rows = max(1, MAX_CHUNK_BYTES // max(per_signal, 1))
    return rows - rows % CHUNK_ALIGNMENT if rows >= CHUNK_ALIGNMENT else rows


def _solve(problem: SparseCodingProblem, method: str, max_iter: int, tol: float,
           init: torch.Tensor | None, step_size: float | None, restart: bool,
           return_history: bool, monitor: Any = None) -> tuple:
    """One chunk: ``(codes, energy, gap, n_iter, converged, step, history, gap_lipschitz)``
    (``gap_lipschitz``: the ``L`` that scaled the gap, ``None`` for the problem's own)."""
    gap_lipschitz = None
    if method == "closed_form":
        codes = problem.threshold(problem.correlation)
        n_iter, history, step = 0, [problem.energy(codes)] if return_history else [], 1.0
        gap = problem.optimality_gap(codes)
        converged = bool(float(gap.max()) <= tol)
        return (codes, problem.energy(codes), gap.detach(), n_iter, converged, step, history,
                None)
    if method == "homotopy":
        run = homotopy_sparse_code(problem, max_iter=max_iter, tol=tol)
        # no step of its own: L (exact, from the small Gram eigenproblem) scales the gap
        gap_lipschitz = exact_lipschitz(problem.D.matrix)
        step = 1.0 / gap_lipschitz
    elif method == "lca":
        run = lca(problem, max_iter=max_iter, tol=tol, init=init, step_size=step_size,
                  return_history=return_history, monitor=monitor)
        step = run.step_size
    elif method == "fista" and monitor is None and uses_fast_dense_path(problem, init,
                                                                        return_history):
        # same iterates per signal, no autograd graph: screening, shrinking, fused products
        run = shrinking_fista(problem, max_iter=max_iter, tol=tol, init=init,
                              step_size=step_size, restart=restart)
        step = run.step_size
        gap_lipschitz = 1.0 / step
    else:
        run = proximal_gradient(
            problem, accelerated=method == "fista", restart=restart, max_iter=max_iter,
            tol=tol, init=init, step_size=step_size, return_history=return_history,
            monitor=monitor)
        step = run.step_size
    # the homotopy kernel forms the gap from the active atoms' Gram columns on its own codes
    gap = run.gap if run.gap is not None else problem.optimality_gap(run.codes, gap_lipschitz)
    return (run.codes, problem.energy(run.codes), gap.detach(), run.n_iter, run.converged,
            step, run.history, gap_lipschitz)


def _empty_batch_step(problem: SparseCodingProblem, method: str,
                      step_size: float | None) -> float:
    """The step the method would have used on a non-empty batch of these signals."""
    if method == "closed_form":
        return 1.0
    if method == "homotopy":
        return 1.0 / exact_lipschitz(problem.D.matrix)
    return step_size if step_size is not None else 1.0 / problem.lipschitz()


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
