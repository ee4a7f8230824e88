"""Opt-in progress of a long :func:`sparsecnn.sparse_code` call, like scikit-learn's
``verbose``.

Every ``every`` iterations (and after the last one) the monitor evaluates, without gradient,

    energy = mean_n E(a_n),  E(a) = 1/2 ||x - D a||^2 + sum_i lam_i |a_i|   (docs/theory.md A.1)
    gap    = max_n ||L (a_n - prox(a_n - grad/L))||_inf / ||D^T x_n||_inf  (the stopping rule)

and hands them to ``callback(iteration, info)``; with ``verbose`` it also prints one line to
stderr at most every ``interval`` seconds (and always at the end).  Between reports an
iteration costs one integer comparison and one clock read, so an un-monitored solve is
unchanged and a monitored one pays two extra passes over the codes per report.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import torch

from .._checks import check_positive_float, check_positive_int
from .problem import SparseCodingProblem

__all__ = ["ProgressMonitor", "make_monitor"]

Callback = Callable[[int, dict[str, Any]], Any]


class ProgressMonitor:
    """Called as ``monitor(iteration, codes)`` by the iterative solvers after each step."""

    def __init__(self, problem: SparseCodingProblem, method: str, max_iter: int, *,
                 verbose: bool, callback: Callback | None, every: int, interval: float,
                 stream: TextIO | None = None) -> None:
        self.problem, self.method, self.max_iter = problem, method, max_iter
        self.verbose, self.callback = verbose, callback
        self.every, self.interval = every, interval
        self.stream = stream
        self.started = time.perf_counter()
        self.last_print = self.started
        self.lipschitz: float | None = None

    def __call__(self, iteration: int, codes: torch.Tensor, *, final: bool = False,
                 converged: bool | None = None) -> None:
        now = time.perf_counter()
        due_callback = self.callback is not None and (final or iteration % self.every == 0)
        due_print = self.verbose and (final or now - self.last_print >= self.interval)
        if not (due_callback or due_print):
            return
        with torch.no_grad():
            energy = float(self.problem.energy(codes).mean())
            gap = float(self.problem.optimality_gap(codes, self.lipschitz).max())
        info = {"energy": energy, "gap": gap, "elapsed": now - self.started,
                "final": final, "converged": converged}
        if due_callback:
            self.callback(iteration, info)
        if due_print:
            self.last_print = now
            state = "" if converged is None else (", converged" if converged else
                                                  ", not converged")
            print(f"sparse_code {self.method}: iteration {iteration}/{self.max_iter}, "
                  f"energy {energy:.6g}, gap {gap:.3g}, {now - self.started:.1f} s{state}",
                  file=self.stream or sys.stderr, flush=True)


def make_monitor(problem: SparseCodingProblem, method: str, max_iter: int, verbose: Any,
                 callback: Any, every: Any, interval: Any) -> ProgressMonitor | None:
    """The monitor of a ``sparse_code`` call, or ``None`` when nobody asked for progress."""
    if not isinstance(verbose, bool):
        raise TypeError(f"verbose must be True or False; got {verbose!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be a callable (iteration, info) or None; got "
                        f"{type(callback).__name__}")
    every = check_positive_int(every, "progress_every")
    interval = check_positive_float(interval, "progress_interval")
    if not verbose and callback is None:
        return None
    return ProgressMonitor(problem, method, max_iter, verbose=verbose, callback=callback,
                           every=every, interval=interval)
