"""Figures of learned dictionaries."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._checks import as_tensor

__all__ = ["plot_atoms"]


def plot_atoms(dictionary: Any, patch_shape: tuple[int, ...], *, title: str = "",
               columns: int | None = None) -> Any:
    """A matplotlib figure with every atom drawn as an image, each scaled symmetrically
    about 0 (grey = 0).

    ``dictionary`` is ``(n_features, n_atoms)`` (columns are atoms; ``patch_shape`` is
    ``(h, w)``) or a filter bank ``(n_filters, C, h, w)`` (channels are averaged)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tensor, _ = as_tensor(dictionary, "dictionary", dtype=None)
    array = tensor.detach().cpu().to(dtype=tensor.dtype).numpy().astype(np.float64)
    if array.ndim == 4:
        atoms = array.mean(axis=1)
    elif array.ndim == 2:
        if array.shape[0] != int(np.prod(patch_shape)):
            raise ValueError(f"dictionary has {array.shape[0]} rows; patch_shape {patch_shape} "
                             f"needs {int(np.prod(patch_shape))}")
        atoms = array.T.reshape(-1, *patch_shape)
    else:
        raise ValueError(f"dictionary must be 2-D (n_features, n_atoms) or 4-D filters; got "
                         f"shape {array.shape}")
    n = atoms.shape[0]
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 0.7, rows * 0.7 + 0.4))
    for index, axis in enumerate(np.atleast_1d(axes).ravel()):
        axis.set_axis_off()
        if index < n:
            atom = atoms[index]
            limit = float(np.abs(atom).max()) or 1.0
            axis.imshow(atom, cmap="gray", vmin=-limit, vmax=limit, interpolation="nearest")
    if title:
        figure.suptitle(title)
    return figure
