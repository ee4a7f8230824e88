"""Statistics of learned dictionaries and their codes (docs/theory.md C7, check 25).

* :func:`excess_kurtosis` -- ``E[(c - mu)^4] / sigma^4 - 3`` of every coefficient over the
  signals (0 for a Gaussian; large for sparse, heavy-tailed codes).
* :func:`zero_fraction` -- fraction of coefficients that are exactly zero.
* :func:`pca_basis` -- principal directions of the signals (the dense, decorrelating code
  that Olshausen & Field compare sparse coding against).
* :func:`atom_orientation_coherence` -- how oriented an atom is: the coherence
  ``(mu_1 - mu_2) / (mu_1 + mu_2)`` of the eigenvalues of its gradient structure tensor
  ``sum_p grad d(p) grad d(p)^T`` (1 for a perfect edge/grating, near 0 for isotropic
  structure).
* :func:`atom_localization` -- the fraction of an atom's energy ``sum d(p)^2`` inside the
  ``w x w`` window that holds the most (1 for a fully localized atom, ``w^2/P`` on average for
  an unlocalized one of ``P`` pixels).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .._checks import as_matrix, as_tensor

__all__ = ["atom_localization", "atom_orientation_coherence", "excess_kurtosis", "pca_basis",
           "zero_fraction"]


def _matrix(value: Any, name: str, axes: str) -> torch.Tensor:
    return as_matrix(value, name, axes=axes, dtype=torch.float64).detach()


def excess_kurtosis(codes: Any) -> torch.Tensor:
    """Excess kurtosis of every column of ``codes`` ``(n_signals, n_coefficients)``.

    A constant column (an atom no signal uses) has no kurtosis: it raises ``ValueError``
    naming it rather than returning NaN.
    """
    values = _matrix(codes, "codes", "(n_signals, n_coefficients)")
    centred = values - values.mean(0)
    variance = (centred ** 2).mean(0)
    dead = torch.nonzero(variance == 0).flatten()
    if dead.numel():
        raise ValueError(f"codes has {dead.numel()} constant column(s) (e.g. index "
                         f"{int(dead[0])}); kurtosis is undefined for them")
    return (centred ** 4).mean(0) / variance ** 2 - 3.0


def zero_fraction(codes: Any) -> float:
    """Fraction of entries of ``codes`` that are exactly zero."""
    values, _ = as_tensor(codes, "codes")
    return float((values == 0).to(torch.float64).mean())


def pca_basis(signals: Any) -> torch.Tensor:
    """Principal directions ``(n_features, n_features)`` (columns, decreasing variance) of the
    centred signals ``(n_signals, n_features)``, from the SVD of the data matrix."""
    data = _matrix(signals, "signals", "(n_signals, n_features)")
    centred = data - data.mean(0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    return vh.T


def _atoms_as_images(dictionary: Any, patch_shape: tuple[int, int]) -> np.ndarray:
    matrix = _matrix(dictionary, "dictionary", "(n_features, n_atoms)").numpy()
    if matrix.shape[0] != patch_shape[0] * patch_shape[1]:
        raise ValueError(f"dictionary has {matrix.shape[0]} rows; expected patch_shape "
                         f"{patch_shape} to have that many pixels")
    return matrix.T.reshape(-1, *patch_shape)


def atom_orientation_coherence(dictionary: Any, patch_shape: tuple[int, int]) -> np.ndarray:
    """Structure-tensor coherence ``(mu_1 - mu_2)/(mu_1 + mu_2)`` of every atom (column)."""
    atoms = _atoms_as_images(dictionary, patch_shape)
    gy = np.diff(atoms, axis=1)[:, :, :-1]
    gx = np.diff(atoms, axis=2)[:, :-1, :]
    jxx = (gx * gx).sum(axis=(1, 2))
    jyy = (gy * gy).sum(axis=(1, 2))
    jxy = (gx * gy).sum(axis=(1, 2))
    trace = jxx + jyy
    spread = np.sqrt((jxx - jyy) ** 2 + 4 * jxy ** 2)
    return np.divide(spread, trace, out=np.zeros_like(trace), where=trace > 0)


def atom_localization(dictionary: Any, patch_shape: tuple[int, int], window: int = 4
                      ) -> np.ndarray:
    """Largest fraction of each atom's energy inside a ``window x window`` square."""
    atoms = _atoms_as_images(dictionary, patch_shape)
    if not 1 <= window <= min(patch_shape):
        raise ValueError(f"window must be in [1, {min(patch_shape)}]; got {window!r}")
    energy = atoms ** 2
    total = energy.sum(axis=(1, 2))
    integral = np.pad(energy.cumsum(1).cumsum(2), ((0, 0), (1, 0), (1, 0)))
    w = window
    boxes = (integral[:, w:, w:] - integral[:, :-w, w:] - integral[:, w:, :-w]
             + integral[:, :-w, :-w])
    best = boxes.reshape(boxes.shape[0], -1).max(1)
    return np.divide(best, total, out=np.zeros_like(best), where=total > 0)
