"""Fast exact FISTA for large batches over a dense dictionary (no autograd).

Solves, independently for every signal ``x_n`` of the batch, the energy of docs/theory.md A.1/A.3::

    E(a)  = 1/2 ||x - D a||^2 + sum_i lam_i |a_i|          (signed)
    E+(a) = 1/2 ||x - D a||^2 + sum_i lam_i a_i,  a >= 0    (non-negative)

with FISTA and gradient restart (Beck & Teboulle 2009; O'Donoghue & Candes 2015), the same
iteration as :func:`sparsecnn.inference.proximal_gradient.proximal_gradient`, organised for
speed:

* **exact screening of zero solutions** -- ``a = 0`` minimises ``E`` iff ``|D^T x| <= lam``
  entrywise (``D^T x <= lam`` for ``E+``): the gradient ``-D^T x`` at zero lies in the
  subdifferential of the penalty.  Such signals are solved before any iteration;
* **shrinking** -- the batch is compacted every ``check_every`` iterations: a signal whose
  relative change ``||a^{t+1} - a^t|| / ||a^{t+1}||`` and relative optimality gap
  ``||L (a - prox(a - grad/L))||_inf / ||D^T x||_inf`` are both ``<= tol`` is final (the
  stopping rule of :func:`sparsecnn.sparse_code`, applied to each signal, which is an
  independent problem) and leaves the batch, so the work follows each signal's own
  convergence instead of the slowest one's;
* **fused products** -- the proximal-gradient point ``y - (1/L) D^T (D y - x)`` is one
  ``addmm`` with ``I - G/L`` (``G = D^T D``) when ``n_atoms <= 2 n_features``, else two thin
  ``addmm`` through the signal space.

Every signal's codes are the iterates of plain FISTA with restart on that signal alone, so the
minimiser, the energy and the stopping rule are those of the reference solver.
"""

from __future__ import annotations

import math

import torch

from ..dictionary import DenseDictionary
from .problem import SolverRun, SparseCodingProblem, check_iterate

__all__ = ["exact_lipschitz", "shrinking_fista", "uses_fast_dense_path", "zero_is_optimal"]


def uses_fast_dense_path(problem: SparseCodingProblem, init: torch.Tensor | None,
                         return_history: bool) -> bool:
    """Whether :func:`sparsecnn.sparse_code` may route FISTA to :func:`shrinking_fista`: a
    dense dictionary, no energy history, and no autograd graph to build (grad mode off or
    nothing requiring grad)."""
    if not isinstance(problem.D, DenseDictionary) or return_history:
        return False
    if not torch.is_grad_enabled():
        return True
    tensors = (problem.x, problem.D.weight, problem.lam, init)
    return not any(t is not None and t.requires_grad for t in tensors)


def exact_lipschitz(matrix: torch.Tensor) -> float:
    """``L = ||D||_2^2``: the largest eigenvalue of the smaller of ``D D^T`` and ``D^T D``
    (float64 symmetric eigensolver; exact up to rounding, no iteration count)."""
    wide = matrix.detach().to(torch.float64)
    gram = wide @ wide.T if wide.shape[0] <= wide.shape[1] else wide.T @ wide
    return float(torch.linalg.eigvalsh(gram)[-1])


def zero_is_optimal(correlation: torch.Tensor, lam: torch.Tensor, nonneg: bool
                    ) -> torch.Tensor:
    """Signals whose minimiser is ``a = 0``: ``|D^T x| <= lam`` (``D^T x <= lam`` if
    ``nonneg``) for every atom.  ``correlation`` is ``D^T x`` ``(batch, n_atoms)``."""
    excess = correlation if nonneg else correlation.abs()
    return (excess <= lam).all(dim=1)


class _Batch:
    """The signals still iterating, with their rows of every per-signal quantity."""

    def __init__(self, index: torch.Tensor, codes: torch.Tensor, scaled_correlation:
                 torch.Tensor, signals: torch.Tensor | None, theta: torch.Tensor,
                 scale: torch.Tensor) -> None:
        self.index = index
        self.codes = codes
        self.point = codes
        self.momentum = torch.ones(codes.shape[0], dtype=codes.dtype, device=codes.device)
        self.scaled_correlation = scaled_correlation
        self.signals = signals
        self.theta = theta
        self.scale = scale

    def keep(self, rows: torch.Tensor) -> None:
        self.index = self.index[rows]
        self.codes = self.codes[rows]
        self.point = self.point[rows]
        self.momentum = self.momentum[rows]
        self.scaled_correlation = self.scaled_correlation[rows]
        if self.signals is not None:
            self.signals = self.signals[rows]
        if self.theta.ndim == 2 and self.theta.shape[0] > 1:
            self.theta = self.theta[rows]
        self.scale = self.scale[rows]


def shrinking_fista(problem: SparseCodingProblem, *, max_iter: int, tol: float,
                    init: torch.Tensor | None = None, step_size: float | None = None,
                    restart: bool = True, check_every: int = 5) -> SolverRun:
    """FISTA with exact zero screening and per-signal shrinking (see the module docstring).

    ``problem`` must have a :class:`DenseDictionary`; nothing may require grad.  Returns the
    codes, the largest number of iterations any signal used, whether every signal met the
    stopping rule, and the step size ``1/L`` (no energy history).
    """
    if not isinstance(problem.D, DenseDictionary):
        raise TypeError(f"shrinking_fista needs a DenseDictionary; got {type(problem.D).__name__}")
    lipschitz = problem.lipschitz() if step_size is None else 1.0 / step_size
    step = 1.0 / lipschitz
    with torch.no_grad():
        return _solve(problem, max_iter, tol, init, step, lipschitz, restart, check_every)


def _solve(problem: SparseCodingProblem, max_iter: int, tol: float,
           init: torch.Tensor | None, step: float, lipschitz: float, restart: bool,
           check_every: int) -> SolverRun:
    x = problem.x.detach()
    matrix = problem.D.matrix.detach()
    correlation = problem.correlation.detach()
    n_signals, n_atoms = correlation.shape
    lam = problem.lam.detach()
    lam_rows = lam.expand(n_signals, n_atoms) if lam.ndim == 2 and lam.shape[0] > 1 else lam
    nonneg = problem.nonneg
    codes = torch.zeros_like(correlation) if init is None else init.detach().clone()

    active = torch.ones(n_signals, dtype=torch.bool, device=x.device)
    if init is None:
        active = ~zero_is_optimal(correlation, lam_rows, nonneg)
    index = torch.nonzero(active).flatten()
    use_gram = n_atoms <= 2 * matrix.shape[0]
    if use_gram:
        # y - step (y G - c) = y (I - step G) + step c
        transition = torch.eye(n_atoms, dtype=x.dtype, device=x.device) - step * (
            matrix.T @ matrix)
    theta_all = lam_rows * step
    scale_all = torch.clamp(correlation.abs().amax(1), min=torch.finfo(x.dtype).tiny)
    rows_theta = theta_all[index] if theta_all.ndim == 2 and theta_all.shape[0] > 1 \
        else theta_all
    batch = _Batch(index, codes[index], step * correlation[index],
                   None if use_gram else x[index], rows_theta, scale_all[index])

    def prox_point(point: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``point - step * D^T (D point - x)`` for ``batch`` (or its ``rows``)."""
        if use_gram:
            bias = batch.scaled_correlation if rows is None else batch.scaled_correlation[rows]
            return torch.addmm(bias, point, transition)
        signals = batch.signals if rows is None else batch.signals[rows]
        residual = torch.addmm(signals, point, matrix.T, beta=-1.0)  # D y - x
        return torch.addmm(point, residual, matrix, alpha=-step)

    scalar_theta = float(theta_all) if theta_all.numel() == 1 else None

    def threshold(values: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Proximal map of ``step * penalty``, in place on the fresh tensor ``values``."""
        if scalar_theta is not None:
            if nonneg:
                return values.sub_(scalar_theta).clamp_(min=0.0)
            return torch.nn.functional.softshrink(values, scalar_theta)  # one fused pass
        theta = batch.theta
        if rows is not None and theta.ndim == 2 and theta.shape[0] > 1:
            theta = theta[rows]
        if nonneg:
            return values.sub_(theta).clamp_(min=0.0)
        return values - torch.clamp(values, -theta, theta)

    n_iter, converged = 0, index.numel() == 0
    tiny = torch.finfo(x.dtype).tiny
    for n_iter in range(1, max_iter + 1):
        if batch.index.numel() == 0:
            n_iter -= 1
            converged = True
            break
        new_codes = threshold(prox_point(batch.point))
        difference = new_codes - batch.codes
        momentum = batch.momentum
        if restart:
            direction = torch.linalg.vecdot(batch.point - new_codes, difference)
            momentum = torch.where(direction > 0, torch.ones_like(momentum), momentum)
        next_momentum = (1.0 + torch.sqrt(1.0 + 4.0 * momentum ** 2)) / 2.0
        beta = ((momentum - 1.0) / next_momentum).unsqueeze(1)
        batch.point = torch.addcmul(new_codes, difference, beta)
        batch.codes, batch.momentum = new_codes, next_momentum
        if n_iter % check_every and n_iter != max_iter:
            continue
        change = torch.linalg.vector_norm(difference, dim=1) / torch.clamp(
            torch.linalg.vector_norm(new_codes, dim=1), min=tiny)
        if not math.isfinite(float(change.max())):
            check_iterate(new_codes, "fista", n_iter)
        candidates = torch.nonzero(change <= tol).flatten()
        if candidates.numel() == 0:
            continue
        finished = candidates[_gap(batch, candidates, prox_point, threshold, lipschitz) <= tol]
        if finished.numel() == 0:
            continue
        codes[batch.index[finished]] = batch.codes[finished]
        remaining = torch.ones(batch.index.numel(), dtype=torch.bool, device=x.device)
        remaining[finished] = False
        batch.keep(torch.nonzero(remaining).flatten())
    else:
        converged = batch.index.numel() == 0
    if batch.index.numel():
        codes[batch.index] = batch.codes
    check_iterate(codes, "fista", n_iter)
    return SolverRun(codes, n_iter, converged, step, [])


def _gap(batch: _Batch, rows: torch.Tensor, prox_point, threshold, lipschitz: float
         ) -> torch.Tensor:
    """Relative optimality gap of the current codes of ``rows`` (docs/theory.md A.8)."""
    codes = batch.codes[rows]
    stepped = threshold(prox_point(codes, rows), rows)
    return (lipschitz * (codes - stepped)).abs().amax(1) / batch.scale[rows]
