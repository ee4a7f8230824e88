"""Sparse inference: closed form, ISTA/FISTA, LCA and the exact homotopy path on one shared
problem definition."""

from .problem import (
    ConvergenceWarning,
    SolverDivergedError,
    SparseCodeResult,
    SparseCodingProblem,
    energy,
    optimality_gap,
)
from .solve import METHODS, sparse_code

__all__ = [
    "METHODS",
    "ConvergenceWarning",
    "SolverDivergedError",
    "SparseCodeResult",
    "SparseCodingProblem",
    "energy",
    "optimality_gap",
    "sparse_code",
]
