"""Figures of the feature world: samples, templates beside learned filters, detection maps,
margins and accuracy-vs-size curves.  Each function returns PNG bytes (or a matplotlib figure
with ``as_figure=True``)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = ["accuracy_curve_figure", "detection_maps_figure", "filters_figure",
           "margin_figure", "png", "sample_grid_figure"]


def png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def sample_grid_figure(world: Any, sample: Any, count: int = 16, *,
                       as_figure: bool = False) -> Any:
    """The first ``count`` images with their labels; distractors outlined in red."""
    count = min(count, len(sample))
    columns = min(8, max(count, 1))
    rows = max(1, -(-count // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.8 * rows),
                                squeeze=False)
    k = world.feature_size
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index >= count:
            continue
        axis.imshow(sample.images[index, 0].numpy(), cmap="gray", vmin=0, vmax=1)
        axis.set_title(f"class {int(sample.labels[index])}", fontsize=8)
        truth = sample.truth
        for j, position, distractor in zip(truth.feature_ids[index],
                                           truth.feature_positions[index],
                                           truth.is_distractor[index], strict=True):
            if j >= 0:
                axis.add_patch(plt.Rectangle((position[1] - 0.5, position[0] - 0.5), k, k,
                                             fill=False, lw=0.8,
                                             color="red" if distractor else "lime"))
    figure.suptitle("feature-world samples (green: object features, red: distractors)",
                    fontsize=9)
    return figure if as_figure else png(figure)


def filters_figure(templates: np.ndarray, learned: np.ndarray | None = None,
                   similarity: Sequence[float] | None = None, *, as_figure: bool = False) -> Any:
    """Row 1: the constructed kernels 2F_j - 1; row 2: the best-matching learned filters."""
    n = len(templates)
    rows = 1 if learned is None else 2
    figure, axes = plt.subplots(rows, n, figsize=(1.3 * n, 1.5 * rows), squeeze=False)
    for j in range(n):
        axes[0, j].imshow(2 * templates[j] - 1, cmap="bwr", vmin=-1, vmax=1)
        axes[0, j].set_title(f"2F_{j}-1", fontsize=8)
        axes[0, j].axis("off")
        if learned is not None:
            scale = float(np.abs(learned[j]).max()) or 1.0
            axes[1, j].imshow(learned[j] / scale, cmap="bwr", vmin=-1, vmax=1)
            title = "learned" if similarity is None else f"cos {similarity[j]:.2f}"
            axes[1, j].set_title(title, fontsize=8)
            axes[1, j].axis("off")
    return figure if as_figure else png(figure)


def detection_maps_figure(image: torch.Tensor, constructed: torch.Tensor,
                          trained: torch.Tensor | None = None, *, as_figure: bool = False) -> Any:
    """An image, the constructed detection maps h_j and (optionally) the trained network's
    matched channels."""
    n = constructed.shape[0]
    rows = 2 if trained is None else 3
    figure, axes = plt.subplots(rows, n + 1, figsize=(1.4 * (n + 1), 1.5 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    axes[0, 0].imshow(image.numpy(), cmap="gray", vmin=0, vmax=1)
    axes[0, 0].set_title("image", fontsize=8)
    for j in range(n):
        axes[1, j + 1].imshow(constructed[j].numpy(), cmap="magma", vmin=0, vmax=1)
        axes[1, j + 1].set_title(f"h_{j} built", fontsize=8)
        if trained is not None:
            axes[2, j + 1].imshow(trained[j].numpy(), cmap="magma")
            axes[2, j + 1].set_title(f"trained ~{j}", fontsize=8)
    return figure if as_figure else png(figure)


def margin_figure(margin: torch.Tensor, radius: float, *, as_figure: bool = False) -> Any:
    figure, axis = plt.subplots(figsize=(4, 2.6))
    values = margin.numpy()
    low, high = float(values.min()), float(values.max())
    bins = np.linspace(low - 0.5, high + 0.5, 31) if high - low < 1e-6 else 30
    axis.hist(values, bins=bins, color="tab:blue")
    axis.set_xlabel("margin (true score - best other)")
    axis.set_ylabel("images")
    axis.set_title(f"constructed network; certified radius {radius:.3g}", fontsize=9)
    return figure if as_figure else png(figure)


def accuracy_curve_figure(sizes: Sequence[int], accuracies: np.ndarray,
                          constructed_accuracy: float, *, as_figure: bool = False) -> Any:
    """Test accuracy (mean and sd over seeds) against training-set size."""
    figure, axis = plt.subplots(figsize=(4.2, 2.8))
    mean, sd = accuracies.mean(1), accuracies.std(1)
    axis.errorbar(sizes, mean, yerr=sd, marker="o", capsize=3, label="trained (Adam)")
    axis.axhline(constructed_accuracy, color="k", ls="--", label="constructed (no data)")
    axis.set_xscale("log")
    axis.set_xlabel("training images")
    axis.set_ylabel("test accuracy")
    axis.legend(fontsize=8)
    return figure if as_figure else png(figure)
