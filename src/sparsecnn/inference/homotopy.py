"""Exact sparse coding over a dense dictionary by the homotopy (LARS-lasso) path.

For every signal ``x`` of the batch, independently, the minimiser of the energy of docs/theory.md
A.1/A.3 with per-atom (or per-coefficient) thresholds ``lam_i > 0``::

    E(a)  = 1/2 ||x - D a||^2 + sum_i lam_i |a_i|          (signed)
    E+(a) = 1/2 ||x - D a||^2 + sum_i lam_i a_i,  a >= 0    (non-negative)

is the end point, at ``t = 1``, of the piecewise-linear path ``a(t)`` of minimisers of the
energy with thresholds ``t lam`` (Osborne, Presnell & Turlach 2000; Efron, Hastie, Johnstone
& Tibshirani 2004, "LARS-lasso"; the non-negative variant is their positive lasso).  With the
Gram matrix ``G = D^T D``, the correlations ``c = D^T x`` and the residual correlations
``r(t) = c - G a(t)``, the optimality (KKT) conditions along the path read

    r_i(t) = t lam_i s_i          on the active set A (s_i = sign a_i; s_i = +1 if nonneg)
    |r_j(t)| <= t lam_j           off A  (r_j(t) <= t lam_j if nonneg)

so on each segment ``a_A(t) = G_AA^{-1} (c_A - t s_A lam_A)`` moves along
``u = G_AA^{-1} (s_A lam_A)`` as ``t`` decreases.  The path starts at
``t_0 = max_j |c_j| / lam_j`` (``max_j c_j / lam_j`` if nonneg) with ``a = 0`` (if
``t_0 <= 1``, ``a = 0`` is the minimiser) and each segment ends at the first event:

* an inactive atom ``j`` reaches its bound: ``r_j - dt g_j = +-(t - dt) lam_j`` with
  ``g = G_{:,A} u``; it joins ``A`` with that sign (only ``+`` if nonneg);
* an active coefficient reaches zero: ``a_i + dt u_i = 0``; it leaves ``A`` (the lasso
  modification of LARS, which keeps the signs consistent);
* the target ``t = 1`` is reached: the path ends.

``G_AA`` is kept as a Cholesky factor, extended by one row when an atom joins and refactorised
from the leaving atom's row when one leaves.  At ``t = 1`` the active coefficients are
recomputed from the factor, ``a_A = G_AA^{-1} (c_A - s_A lam_A)``, which removes the drift of
the incremental updates, and the end point is **certified** in float64 by the optimality
conditions above (signs on ``A``; ``|c_j - G_{j,A} a_A| <= lam_j`` off ``A`` up to ``2^-36
max|c|``): the result is the exact minimiser up to float64 rounding.  Because the certificate
guards the end point, the event search itself (``g``, the candidate lengths, ``r``) may run in
float32 for float32 inputs, half the memory traffic of the dominant product ``G_{:,A} u``; a
signal whose float32 search ends uncertified is run again in float64.

Per-signal statistics: the number of path segments (events) and a status: ``0`` solved, ``1``
the step budget ran out, ``2`` the active atoms became linearly dependent (``G_AA`` singular
to working precision: the path is not unique there), ``3`` a threshold ``lam_i <= 0`` (the
path has no start ``t_0``), ``4`` the end point failed its certificate.
:func:`homotopy_sparse_code` solves the signals with status ``0`` exactly and hands the others
to FISTA.

The kernel is compiled by Numba and releases the GIL; the batch is split over
``torch.get_num_threads()`` threads.  No autograd: the codes are a fixed point, not a graph.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import torch

from ..dictionary import DenseDictionary
from .active_set import exact_lipschitz, shrinking_fista
from .problem import SolverRun, SparseCodingProblem

__all__ = [
    "DEGENERATE",
    "MAX_PATH_SEGMENTS",
    "NO_PATH_START",
    "SOLVED",
    "STEP_BUDGET_EXHAUSTED",
    "UNCERTIFIED",
    "homotopy_path_ends",
    "homotopy_sparse_code",
]

SOLVED, STEP_BUDGET_EXHAUSTED, DEGENERATE, NO_PATH_START, UNCERTIFIED = 0, 1, 2, 3, 4
# The kernel counts segments in int64: a larger budget (max_iter=10**30) is clamped to this.
MAX_PATH_SEGMENTS = int(np.iinfo(np.int64).max)
# A joining atom whose squared distance to the span of the active atoms is below this
# fraction of its squared norm makes G_AA numerically singular.
_INDEPENDENCE_TOLERANCE = 1e-10
# An end point is certified when no inactive atom exceeds its bound by more than this
# fraction of max|D^T x| (float64 rounding of G_{:,A} a_A is ~1e-14 of it).
_CERTIFICATE_TOLERANCE = 2.0 ** -36
# Rows per chunk of work handed to a thread.
_CHUNK_ROWS = 256
# Reassociation and contraction for vectorised loops; no "no-inf" assumption (blocked atoms
# carry +inf).
_FAST_FINITE_MATH = {"nsz", "arcp", "contract", "reassoc", "afn"}


def _njit(**options):
    """``numba.njit(cache=True, nogil=True, error_model="numpy", **options)``, or without
    the on-disk cache when numba finds no writable place for it (its search:
    ``$NUMBA_CACHE_DIR``, the package's ``__pycache__``, ``$XDG_CACHE_HOME/numba`` or
    ``~/.cache/numba``).  A read-only install with an unwritable ``$HOME`` then compiles on
    first use in every process instead of failing at import with "cannot cache function"
    (docs/reliability.md, "Compiled kernels").

    ``error_model="numpy"``: a division by zero gives inf/nan as in NumPy instead of raising,
    which drops the zero-divisor branch from every inner-loop division (measured: kernel
    1.96 s -> 1.71 s on P1, same codes).  The kernels never divide by a zero they need
    to catch: blocked atoms carry +inf on purpose and every end point is certified in float64
    afterwards."""
    options = {"error_model": "numpy", **options}

    def decorate(function):
        try:
            return numba.njit(cache=True, nogil=True, **options)(function)
        except RuntimeError as error:
            if "cannot cache function" not in str(error):
                raise
            return numba.njit(cache=False, nogil=True, **options)(function)
    return decorate


@_njit()
def _cholesky_append(factor: np.ndarray, inverse: np.ndarray, gram: np.ndarray,
                     active: np.ndarray, size: int, atom: int, column: np.ndarray) -> bool:
    """Extend the lower Cholesky factor of ``G_AA`` (``size`` atoms) by ``atom``; return
    False if the atom is numerically in the span of the active ones.

    ``inverse[k] = 1 / L_kk``: the triangular solves multiply by it instead of dividing (a
    division's latency sits on their serial chain; the codes are certified afterwards, so
    the last-bit difference is harmless).  The new row is read from row ``atom`` of ``G``
    (``G`` is symmetric), one contiguous row instead of a column gather."""
    row = gram[atom]
    for k in range(size):
        value = row[active[k]]
        for m in range(k):
            value -= factor[k, m] * column[m]
        column[k] = value * inverse[k]
    pivot = row[atom]
    for k in range(size):
        pivot -= column[k] * column[k]
    if pivot <= _INDEPENDENCE_TOLERANCE * gram[atom, atom]:
        return False
    for k in range(size):
        factor[size, k] = column[k]
    factor[size, size] = math.sqrt(pivot)
    inverse[size] = 1.0 / factor[size, size]
    return True


@_njit(fastmath=_FAST_FINITE_MATH)
def _forward_rows(factor: np.ndarray, inverse: np.ndarray, begin: int, end: int,
                  rhs: np.ndarray, out: np.ndarray) -> None:
    """Rows ``begin..end-1`` of the forward solve ``L out = rhs`` (the earlier rows of ``out``
    are already solved): extending the factor by a row only needs the new entry."""
    for k in range(begin, end):
        row = factor[k]
        value = rhs[k]
        for m in range(k):
            value -= row[m] * out[m]
        out[k] = value * inverse[k]


@_njit(fastmath=_FAST_FINITE_MATH)
def _back_substitute(factor: np.ndarray, inverse: np.ndarray, size: int, out: np.ndarray
                     ) -> None:
    """``out <- L^{-T} out`` in place, in column (axpy) form so that it reads rows of ``L``
    (``inverse[k] = 1 / L_kk``)."""
    for k in range(size - 1, -1, -1):
        row = factor[k]
        value = out[k] * inverse[k]
        out[k] = value
        for m in range(k):
            out[m] -= value * row[m]


@_njit(fastmath=_FAST_FINITE_MATH)
def _cholesky_solve(factor: np.ndarray, inverse: np.ndarray, size: int, rhs: np.ndarray,
                    out: np.ndarray) -> None:
    """``out = (L L^T)^{-1} rhs`` for the leading ``size`` block of the factor ``L``."""
    _forward_rows(factor, inverse, 0, size, rhs, out)
    _back_substitute(factor, inverse, size, out)


@_njit(fastmath=_FAST_FINITE_MATH)
def _combine_rows(gram: np.ndarray, active: np.ndarray, weights: np.ndarray, size: int,
                  out: np.ndarray) -> None:
    """``out = G[:, A] weights`` (``G`` symmetric: rows of ``G`` are read, four at a time)."""
    n_atoms = out.shape[0]
    for j in range(n_atoms):
        out[j] = 0.0
    k = 0
    while k + 4 <= size:
        first, second = gram[active[k]], gram[active[k + 1]]
        third, fourth = gram[active[k + 2]], gram[active[k + 3]]
        a, b, c, d = weights[k], weights[k + 1], weights[k + 2], weights[k + 3]
        for j in range(n_atoms):
            out[j] += a * first[j] + b * second[j] + c * third[j] + d * fourth[j]
        k += 4
    while k < size:
        row, a = gram[active[k]], weights[k]
        for j in range(n_atoms):
            out[j] += a * row[j]
        k += 1


@_njit(fastmath=_FAST_FINITE_MATH)
def _first_minimum(values: np.ndarray) -> int:
    """Index of the first smallest entry of ``values``: the minimum, then one scan for it.

    The minimum runs eight independent running minima in the values' dtype: LLVM does not
    vectorise this reduction, and one accumulator is a serial chain of ``min`` latencies
    (a float64 one over float32 values was ~15 % of the P1 kernel's samples; eight: 216 ->
    84 ns per 256 values, measured)."""
    n = values.shape[0]
    full = n - n % 8
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = values[0]
    for base in range(0, full, 8):
        value = values[base]
        m0 = value if value < m0 else m0
        value = values[base + 1]
        m1 = value if value < m1 else m1
        value = values[base + 2]
        m2 = value if value < m2 else m2
        value = values[base + 3]
        m3 = value if value < m3 else m3
        value = values[base + 4]
        m4 = value if value < m4 else m4
        value = values[base + 5]
        m5 = value if value < m5 else m5
        value = values[base + 6]
        m6 = value if value < m6 else m6
        value = values[base + 7]
        m7 = value if value < m7 else m7
    smallest = min(min(min(m0, m1), min(m2, m3)), min(min(m4, m5), min(m6, m7)))
    for j in range(full, n):
        smallest = values[j] if values[j] < smallest else smallest
    for j in range(n):
        if values[j] == smallest:
            return j
    return 0


@_njit(fastmath=_FAST_FINITE_MATH)
def _homotopy_rows(gram: np.ndarray, working_gram: np.ndarray, correlation: np.ndarray,
                   lam: np.ndarray, nonneg: bool, max_steps: int, lipschitz: float,
                   tiny: float, codes: np.ndarray, steps: np.ndarray, status: np.ndarray,
                   gap: np.ndarray) -> None:
    """Run the path for every row of ``correlation`` (``D^T x``) into the zero-filled
    ``codes`` (either float dtype).  The event search (``g = G_{:,A} u``, the candidate
    lengths, the residual correlations) runs in ``working_gram``'s dtype; the Cholesky
    factor, the coefficients, the end point and its certificate are float64.

    With ``lipschitz > 0``, ``gap`` receives the relative optimality gap of the codes *as
    stored* (rounded to ``codes``' dtype), in float64: ``||L (a - prox(a - grad/L))||_inf /
    max(||D^T x||_inf, tiny)`` with ``grad = G a - D^T x`` (docs/theory.md A.3, the gap
    :meth:`SparseCodingProblem.optimality_gap` computes); the path has ``G_{:,A}`` at hand, so
    this costs one product per signal instead of a dense ``codes @ G`` over the batch."""
    n_signals, n_atoms = correlation.shape
    per_signal_lam = lam.shape[0] > 1
    # scalars of the working dtype (numba promotes mixed float32/float64 arithmetic)
    typed = np.empty(4, dtype=working_gram.dtype)
    typed[0], typed[1] = 0.0, np.inf
    zero, infinity = typed[0], typed[1]
    residual = np.empty(n_atoms, dtype=working_gram.dtype)
    working_weights = np.empty(n_atoms, dtype=working_gram.dtype)
    working_direction = np.empty(n_atoms, dtype=working_gram.dtype)
    direction_of_atoms = np.empty(n_atoms, dtype=working_gram.dtype)
    coefficients = np.zeros(n_atoms)
    fitted = np.empty(n_atoms)
    rounded = np.empty(n_atoms)
    position = np.full(n_atoms, -1)
    signs = np.zeros(n_atoms)
    active = np.empty(n_atoms, dtype=np.int64)
    factor = np.zeros((n_atoms, n_atoms))
    inverse = np.zeros(n_atoms)  # 1 / diagonal of the factor
    column = np.empty(n_atoms)
    rhs = np.empty(n_atoms)
    direction = np.empty(n_atoms)
    forward = np.empty(n_atoms)
    candidate = np.empty(n_atoms, dtype=working_gram.dtype)
    # +inf for the active atoms and the one that just left
    blocked = np.zeros(n_atoms, dtype=working_gram.dtype)
    positive_lam = True
    for n in range(n_signals):
        weights = lam[n] if per_signal_lam else lam[0]
        steps[n] = 0
        status[n] = SOLVED
        if per_signal_lam or n == 0:
            smallest = np.inf
            for j in range(n_atoms):
                smallest = min(smallest, weights[j])
            positive_lam = smallest > 0.0
        if not positive_lam:
            status[n] = NO_PATH_START
            continue
        for j in range(n_atoms):
            working_weights[j] = weights[j]
        start, first = 0.0, -1
        for j in range(n_atoms):
            residual[j] = correlation[n, j]
            bound = residual[j] if nonneg else abs(residual[j])
            if bound > start * weights[j]:
                start, first = bound / weights[j], j
        if start <= 1.0:
            # a = 0 satisfies |c| <= lam: it is the minimiser, and prox(c/L) = 0 makes its
            # gap exactly 0
            gap[n] = 0.0
            continue
        t = start
        size = 0
        signs[first] = 1.0 if (nonneg or residual[first] > 0) else -1.0
        _cholesky_append(factor, inverse, gram, active, size, first, column)
        # ``forward`` = L^{-1} (s_A lam_A), kept up to date as atoms join and leave
        rhs[0] = signs[first] * weights[first]
        _forward_rows(factor, inverse, 0, 1, rhs, forward)
        active[0] = first
        position[first] = 0
        blocked[first] = np.inf
        size = 1
        left = -1  # the atom that just left A may not rejoin in the same breath
        finished = False
        segments = 0
        for _ in range(max_steps):
            segments += 1
            for k in range(size):
                direction[k] = forward[k]
            _back_substitute(factor, inverse, size, direction)  # u = G_AA^{-1} s_A lam_A
            for m in range(size):
                working_direction[m] = direction[m]
            _combine_rows(working_gram, active, working_direction, size, direction_of_atoms)
            typed[2] = t
            level = typed[2]
            # the first inactive atom to reach its bound, vectorised: candidate lengths of
            # every atom (blocked ones get +inf), then the smallest
            if nonneg:
                for j in range(n_atoms):
                    w, g = working_weights[j], direction_of_atoms[j]
                    plus = (level * w - residual[j]) / (w - g) if w - g > zero else infinity
                    candidate[j] = max(plus, zero) + blocked[j]
            else:
                for j in range(n_atoms):
                    w, g, r = working_weights[j], direction_of_atoms[j], residual[j]
                    plus = (level * w - r) / (w - g) if w - g > zero else infinity
                    minus = (level * w + r) / (w + g) if w + g > zero else infinity
                    candidate[j] = max(min(plus, minus), zero) + blocked[j]
            who = _first_minimum(candidate)
            length, event, side = t - 1.0, 0, 1.0
            if candidate[who] < length:
                length, event = float(candidate[who]), 1
                w, g, r = working_weights[who], direction_of_atoms[who], residual[who]
                if not nonneg:  # which bound it reached: the nearer one
                    plus = (level * w - r) / (w - g) if w - g > zero else infinity
                    minus = (level * w + r) / (w + g) if w + g > zero else infinity
                    side = 1.0 if plus <= minus else -1.0
            for k in range(size):
                value = coefficients[active[k]]
                if value * direction[k] < 0.0 and abs(value) < length * abs(direction[k]):
                    length, event, who = -value / direction[k], 2, k
            for k in range(size):
                coefficients[active[k]] += length * direction[k]
            typed[3] = length
            step = typed[3]
            for j in range(n_atoms):
                residual[j] -= step * direction_of_atoms[j]
            t -= length
            if left >= 0:
                blocked[left] = 0.0
                left = -1
            if event == 0:
                finished = True
                break
            if event == 1:
                if not _cholesky_append(factor, inverse, gram, active, size, who, column):
                    status[n] = DEGENERATE
                    break
                active[size] = who
                position[who] = size
                blocked[who] = np.inf
                signs[who] = side
                rhs[size] = side * weights[who]
                _forward_rows(factor, inverse, size, size + 1, rhs, forward)
                size += 1
            else:
                leaving = active[who]
                coefficients[leaving] = 0.0
                position[leaving] = -1
                for k in range(who, size - 1):
                    active[k] = active[k + 1]
                    position[active[k]] = k
                    rhs[k] = rhs[k + 1]
                size -= 1
                left = leaving  # stays blocked for one segment
                # rows of the factor before the leaving atom's are unchanged; refactorise the rest
                for k in range(who, size):
                    _cholesky_append(factor, inverse, gram, active, k, active[k], column)
                _forward_rows(factor, inverse, who, size, rhs, forward)
        steps[n] = segments
        if finished:
            # exact end point a_A = G_AA^{-1}(c_A - s_A lam_A), certified in float64 by the
            # optimality conditions of every atom (signs on A, bounds off A)
            for k in range(size):
                column[k] = correlation[n, active[k]] - signs[active[k]] * weights[active[k]]
            _cholesky_solve(factor, inverse, size, column, direction)
            certified = True
            for k in range(size):
                if direction[k] * signs[active[k]] < 0.0:
                    certified = False
                coefficients[active[k]] = direction[k]
            if size:
                _combine_rows(gram, active, direction, size, fitted)  # G_{:,A} a_A
            scale = 0.0
            for j in range(n_atoms):
                scale = max(scale, abs(correlation[n, j]))
            slack = _CERTIFICATE_TOLERANCE * scale
            for j in range(n_atoms):
                if position[j] < 0:
                    excess = correlation[n, j] - (fitted[j] if size else 0.0)
                    if not nonneg:
                        excess = abs(excess)
                    if excess > weights[j] + slack:
                        certified = False
            if not certified:
                status[n] = UNCERTIFIED
        elif status[n] == SOLVED:
            status[n] = STEP_BUDGET_EXHAUSTED
        for k in range(size):
            atom = active[k]
            codes[n, atom] = coefficients[atom]
            rounded[k] = codes[n, atom]
            coefficients[atom] = 0.0
            position[atom] = -1
            signs[atom] = 0.0
            blocked[atom] = 0.0
        if left >= 0:
            blocked[left] = 0.0
        if lipschitz > 0.0:
            if size:
                _combine_rows(gram, active, rounded, size, fitted)  # G_{:,A} a_A, as stored
            worst, scale = 0.0, 0.0
            for j in range(n_atoms):
                value = float(codes[n, j])
                moved = value - ((fitted[j] if size else 0.0) - correlation[n, j]) / lipschitz
                theta = weights[j] / lipschitz
                proximal = max(moved - theta, 0.0)
                if not nonneg:
                    proximal -= max(-moved - theta, 0.0)
                worst = max(worst, abs(lipschitz * (value - proximal)))
                scale = max(scale, abs(correlation[n, j]))
            gap[n] = worst / max(scale, tiny)


def homotopy_path_ends(gram: np.ndarray, correlation: np.ndarray, lam: np.ndarray,
                       nonneg: bool, max_steps: int, threads: int = 1,
                       working_dtype: np.dtype | type | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The path's end points for a batch: ``(codes, steps, status)`` (module docstring).

    ``gram`` ``(n_atoms, n_atoms)`` and ``lam`` (``(1, n_atoms)`` or ``(batch, n_atoms)``) are
    float64; ``correlation`` ``(batch, n_atoms)`` is float32 or float64 and the codes have its
    dtype.  The event search runs in ``working_dtype`` (default: the correlation's dtype;
    float32 halves the memory traffic of ``G_{:,A} u``); a signal whose float64 certificate
    fails after a float32 search is run again in float64, so every end point with status 0
    satisfies the optimality conditions in float64 whatever the working dtype.  ``threads``
    workers take chunks of the batch concurrently (the kernel holds no GIL).
    """
    codes, steps, status, _ = _path_ends(gram, correlation, lam, nonneg, max_steps, threads,
                                         working_dtype, 0.0)
    return codes, steps, status


def _path_ends(gram: np.ndarray, correlation: np.ndarray, lam: np.ndarray, nonneg: bool,
               max_steps: int, threads: int, working_dtype: np.dtype | type | None,
               lipschitz: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`homotopy_path_ends` plus the optimality gap of every stored code row when
    ``lipschitz > 0`` (see :func:`_homotopy_rows`; zeros otherwise)."""
    gram = np.ascontiguousarray(gram, dtype=np.float64)
    if correlation.dtype not in (np.float32, np.float64):
        correlation = correlation.astype(np.float64)
    correlation = np.ascontiguousarray(correlation)
    lam = np.ascontiguousarray(lam, dtype=np.float64)
    working = np.dtype(correlation.dtype if working_dtype is None else working_dtype)
    if working not in (np.float32, np.float64):
        raise ValueError(f"working_dtype must be float32 or float64; got {working}")
    codes = np.zeros_like(correlation)
    steps = np.zeros(correlation.shape[0], dtype=np.int64)
    status = np.zeros(correlation.shape[0], dtype=np.int64)
    gap = np.zeros(correlation.shape[0])
    _run_chunks(gram, gram.astype(working), correlation, lam, nonneg, max_steps, threads,
                float(lipschitz), codes, steps, status, gap)
    again = np.flatnonzero(status == UNCERTIFIED)
    if again.size and working != np.float64:
        lam_rows = lam[again] if lam.shape[0] > 1 else lam
        codes[again], steps[again], status[again], gap[again] = _path_ends(
            gram, correlation[again], lam_rows, nonneg, max_steps, threads, np.float64,
            lipschitz)
    return codes, steps, status, gap


def _run_chunks(gram: np.ndarray, working_gram: np.ndarray, correlation: np.ndarray,
                lam: np.ndarray, nonneg: bool, max_steps: int, threads: int, lipschitz: float,
                codes: np.ndarray, steps: np.ndarray, status: np.ndarray, gap: np.ndarray
                ) -> None:
    """Many small chunks handed out on demand: path lengths vary 100-fold between signals."""
    n_signals = correlation.shape[0]
    chunks = np.arange(0, n_signals, _CHUNK_ROWS)
    tiny = float(np.finfo(codes.dtype).tiny)

    def run(begin: int) -> None:
        rows = slice(begin, min(begin + _CHUNK_ROWS, n_signals))
        _homotopy_rows(gram, working_gram, correlation[rows],
                       lam[rows] if lam.shape[0] > 1 else lam, nonneg, max_steps, lipschitz,
                       tiny, codes[rows], steps[rows], status[rows], gap[rows])

    threads = max(1, min(int(threads), len(chunks)))
    if threads == 1:
        for begin in chunks:
            run(begin)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(run, chunks))


def homotopy_sparse_code(problem: SparseCodingProblem, *, max_iter: int, tol: float
                         ) -> SolverRun:
    """Exact codes of ``problem`` (a :class:`DenseDictionary`, ``lam > 0``, no autograd):
    the homotopy path for every signal, FISTA (same ``max_iter`` and ``tol``) for the signals
    whose path is degenerate or longer than ``max_iter`` segments.

    ``max_iter`` beyond :data:`MAX_PATH_SEGMENTS` (the compiled kernel's int64 counter) is
    clamped to it: no path has that many segments, so the result is the same.

    Returns the codes (the problem's dtype and device), the largest number of path segments
    (or FISTA iterations) any signal used, whether every signal was solved: exactly by the
    path, or by FISTA meeting its stopping rule, and every signal's optimality gap with
    ``L = ||D||_2^2`` (formed in the path kernel from ``G_{:,A}``, by
    :meth:`SparseCodingProblem.optimality_gap` for the FISTA rows); no step size (the path
    has none) and no energy history.
    """
    if not isinstance(problem.D, DenseDictionary):
        raise TypeError("homotopy_sparse_code needs a DenseDictionary; got "
                        f"{type(problem.D).__name__}")
    with torch.no_grad():
        x = problem.x
        correlation = problem.correlation.detach()
        n_atoms = correlation.shape[1]
        lam = problem.lam.detach()
        lam = lam.reshape(1, 1).expand(1, n_atoms) if lam.numel() == 1 else \
            lam.reshape(-1, n_atoms)
        matrix = problem.D.matrix.detach().to(dtype=torch.float64, device="cpu")
        lipschitz = exact_lipschitz(matrix)
        path_codes, steps, status, path_gap = _path_ends(
            (matrix.T @ matrix).numpy(), correlation.cpu().numpy(),
            lam.to(dtype=torch.float64, device="cpu").numpy(), problem.nonneg,
            min(max_iter, MAX_PATH_SEGMENTS), torch.get_num_threads(), None, lipschitz)
        codes = torch.from_numpy(path_codes).to(x.device)
        gap = torch.from_numpy(path_gap).to(dtype=codes.dtype, device=x.device)
        n_iter, converged = int(steps.max(initial=0)), True
        unsolved = torch.from_numpy(np.flatnonzero(status != SOLVED)).to(x.device)
        if unsolved.numel():
            lam_rows = problem.lam[unsolved] if problem.lam.ndim == 2 and \
                problem.lam.shape[0] > 1 else problem.lam
            subproblem = SparseCodingProblem.from_validated(x[unsolved], problem.D, lam_rows,
                                                            problem.nonneg)
            fallback = shrinking_fista(subproblem, max_iter=max_iter, tol=tol)
            codes[unsolved] = fallback.codes
            gap[unsolved] = subproblem.optimality_gap(fallback.codes, lipschitz)
            n_iter, converged = max(n_iter, fallback.n_iter), fallback.converged
    return SolverRun(codes, n_iter, converged, None, [], gap)
