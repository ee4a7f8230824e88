"""Sparse inference: closed form, ISTA/FISTA, LCA and the exact homotopy path on one shared
problem definition, and FISTA in the Fourier domain for circular convolutional dictionaries.

The public names of :mod:`sparsecnn.inference` are listed here, once (``problem`` has no
``__all__`` of its own: its public names are these)."""

from .fourier import circular_sparse_code
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
    "circular_sparse_code",
    "energy",
    "optimality_gap",
    "sparse_code",
]
