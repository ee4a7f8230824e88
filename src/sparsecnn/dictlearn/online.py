"""Online/minibatch dictionary learning with unit-norm atoms (docs/theory.md A.1, C7).

Model: ``x = D a + noise`` with a sparse prior on ``a``; learning minimises over ``D`` (unit-norm
columns ``d_j``) the average sparse-coding energy

    f(D) = (1/N) sum_n min_a [ 1/2 ||x_n - D a||^2 + lam ||a||_1 ]     (a >= 0 with ``nonneg``)

by alternating (i) inference of the codes of a minibatch with :func:`sparsecnn.sparse_code`
and (ii) a dictionary step.  The dictionary step is Mairal, Bach, Ponce & Sapiro's online
block-coordinate update (ICML 2009, Algorithm 2) on the running sufficient statistics
``A = sum a a^T`` and ``B = sum x a^T`` (past minibatches down-weighted by ``forget``):

    u_j = d_j + (b_j - D a_j) / A_jj,     d_j = u_j / ||u_j||,

which exactly minimises the surrogate ``1/2 tr(D^T D A) - tr(D^T B)`` over column ``j`` before
the projection onto the unit sphere.  Olshausen & Field's gradient rule
``Delta D ~ (x - D a) a^T`` followed by renormalisation (docs/theory.md A.1) is the special case of
one gradient step on the same objective; the block-coordinate step converges faster and has no
learning rate.  An atom that no code uses (``A_jj`` below ``1e-10`` of the trace) is
re-initialised from a training signal of the current minibatch.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._checks import (
    as_tensor,
    check_choice,
    check_finite,
    check_positive_float,
    check_positive_int,
)
from ..dictionary import DenseDictionary
from ..inference import ConvergenceWarning, sparse_code

__all__ = ["INFERENCE_METHODS", "DictionaryLearningResult", "learn_dictionary"]

INFERENCE_METHODS = ("fista", "homotopy")


@dataclass
class DictionaryLearningResult:
    """Learned dictionary ``(n_features, n_atoms)`` with unit-norm columns, and the mean
    sparse-coding energy per signal of every minibatch (before its dictionary step)."""

    dictionary: torch.Tensor
    energy_history: list[float] = field(default_factory=list)
    n_steps: int = 0
    n_reinitialized: int = 0

    def as_dictionary(self) -> DenseDictionary:
        return DenseDictionary(self.dictionary)


def _check_signals(signals: Any, name: str = "signals") -> torch.Tensor:
    tensor, _ = as_tensor(signals, name)
    if tensor.ndim != 2 or tensor.shape[0] < 1 or tensor.shape[1] < 1:
        raise ValueError(f"{name} must be a 2-D array (n_signals, n_features); got shape "
                         f"{tuple(tensor.shape)}")
    check_finite(tensor, name)
    return tensor


def _initial_dictionary(signals: torch.Tensor, n_atoms: int, generator: torch.Generator
                        ) -> torch.Tensor:
    """Random training signals (plus a little noise so that no atom is zero), unit norm."""
    index = torch.randint(0, signals.shape[0], (n_atoms,), generator=generator)
    noise = torch.randn((n_atoms, signals.shape[1]), generator=generator,
                        dtype=torch.float64).to(signals.dtype)
    atoms = signals[index] + 1e-3 * noise * signals.std()
    atoms = atoms / torch.linalg.vector_norm(atoms, dim=1, keepdim=True)
    return atoms.T.contiguous()


def learn_dictionary(signals: Any, n_atoms: int, lam: float, *, nonneg: bool = False,
                     n_steps: int = 200, batch_size: int = 256, forget: float = 0.95,
                     inference_iter: int = 100, inference_tol: float = 1e-4,
                     inference_method: str = "fista", seed: int = 0, init: Any = None,
                     progress: Callable[[Iterable], Iterable] | None = None
                     ) -> DictionaryLearningResult:
    """Learn ``D`` (``n_features x n_atoms``, unit-norm columns) from ``signals``
    ``(n_signals, n_features)`` by online/minibatch sparse coding (module docstring).

    Parameters
    ----------
    lam : the l1 weight of the energy (library units, docs/theory.md convention 2), ``> 0``.
    nonneg : non-negative codes (penalty ``lam sum a``, docs/theory.md A.3).
    n_steps : number of minibatches; each is drawn without replacement from a seeded
        permutation of the signals (a new permutation per pass).
    forget : weight of the past statistics ``A``, ``B`` at each step (``0 < forget <= 1``).
    inference_iter, inference_tol : budget and tolerance of the codes' inference (FISTA
        iterations; for ``inference_method="homotopy"``, path segments per signal).
    inference_method : ``"fista"`` (approximate codes to ``inference_tol``) or ``"homotopy"``
        (the exact LARS-lasso codes, as in Mairal et al.'s algorithm, and the faster of the two
        for patches; :mod:`sparsecnn.inference.homotopy`).
    init : initial dictionary ``(n_features, n_atoms)``; random training signals by default.
    """
    data = _check_signals(signals)
    n_atoms = check_positive_int(n_atoms, "n_atoms")
    lam = check_positive_float(lam, "lam")
    n_steps = check_positive_int(n_steps, "n_steps")
    batch_size = check_positive_int(batch_size, "batch_size")
    inference_iter = check_positive_int(inference_iter, "inference_iter")
    check_choice(inference_method, "inference_method", INFERENCE_METHODS)
    forget = check_positive_float(forget, "forget")
    if forget > 1:
        raise ValueError(f"forget must be in (0, 1]; got {forget!r}")
    generator = torch.Generator().manual_seed(int(seed))
    if init is None:
        dictionary = _initial_dictionary(data, n_atoms, generator)
    else:
        initial, _ = as_tensor(init, "init", dtype=data.dtype)
        if tuple(initial.shape) != (data.shape[1], n_atoms):
            raise ValueError(f"init must have shape (n_features, n_atoms) = "
                             f"({data.shape[1]}, {n_atoms}); got {tuple(initial.shape)}")
        DenseDictionary(initial).check_atoms("init")
        dictionary = initial / torch.linalg.vector_norm(initial, dim=0, keepdim=True)
    n_features = data.shape[1]
    stat_a = torch.zeros((n_atoms, n_atoms), dtype=data.dtype)
    stat_b = torch.zeros((n_features, n_atoms), dtype=data.dtype)
    order = torch.randperm(data.shape[0], generator=generator)
    cursor = 0
    history: list[float] = []
    reinitialized = 0
    steps: Iterable[int] = range(n_steps)
    if progress is not None:
        steps = progress(steps)
    for _ in steps:
        if cursor + batch_size > data.shape[0]:
            order = torch.randperm(data.shape[0], generator=generator)
            cursor = 0
        batch = data[order[cursor:cursor + batch_size]]
        cursor += batch_size
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            result = sparse_code(batch, DenseDictionary(dictionary), lam, method=inference_method,
                                 nonneg=nonneg, max_iter=inference_iter, tol=inference_tol,
                                 warn=False)
        codes = result.codes
        history.append(float(result.energy.mean()))
        stat_a = forget * stat_a + codes.T @ codes / batch.shape[0]
        stat_b = forget * stat_b + batch.T @ codes / batch.shape[0]
        dictionary, count = _block_coordinate_update(dictionary, stat_a, stat_b, batch,
                                                     generator)
        reinitialized += count
    return DictionaryLearningResult(dictionary=dictionary, energy_history=history,
                                    n_steps=n_steps, n_reinitialized=reinitialized)


def _block_coordinate_update(dictionary: torch.Tensor, stat_a: torch.Tensor,
                             stat_b: torch.Tensor, batch: torch.Tensor,
                             generator: torch.Generator) -> tuple[torch.Tensor, int]:
    """One sweep of ``u_j = d_j + (b_j - D a_j)/A_jj; d_j = u_j/||u_j||`` over the atoms.

    Not differentiated, so the columns are updated in place on a copy."""
    updated = dictionary.clone()
    scale = float(torch.trace(stat_a))
    reinitialized = 0
    with torch.no_grad():
        for j in range(updated.shape[1]):
            diagonal = float(stat_a[j, j])
            if diagonal <= 1e-10 * max(scale, np.finfo(float).tiny):
                sample = batch[int(torch.randint(0, batch.shape[0], (1,), generator=generator))]
                norm = torch.linalg.vector_norm(sample)
                if float(norm) > 0:
                    updated[:, j] = sample / norm
                    reinitialized += 1
                continue
            column = updated[:, j] + (stat_b[:, j] - updated @ stat_a[:, j]) / diagonal
            norm = torch.linalg.vector_norm(column)
            if float(norm) > 0:
                updated[:, j] = column / norm
    return updated, reinitialized
