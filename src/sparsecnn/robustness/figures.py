"""Robustness figures: accuracy vs corruption severity, accuracy vs attack radius, ROC curves
of anomaly scores (mean +- sd bands where several seeds are given).

Each function returns a matplotlib figure (the Agg backend, no display needed); the caller saves
or embeds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..anomaly import auroc, roc_curve
from .corruptions import CORRUPTIONS
from .evaluation import EPSILONS_L2, EPSILONS_LINF

__all__ = ["MODEL_LABELS", "plot_attack_curves", "plot_corruption_curves", "plot_roc_curves",
           "pyplot"]

#: legend text of the models compared by the robustness study and ``sparsecnn robustness``;
#: any other model is labelled by its key.
MODEL_LABELS = {"cnn_k0": "CNN (one-shot ReLU)", "cnn_k2": "CNN, 2-step ISTA",
                "cnn_k5": "CNN, 5-step ISTA", "cnn_k10": "CNN, 10-step ISTA",
                "cnn_proper_prior": "CNN, proper priors", "relu_front_end": "ReLU front end",
                "lca_front_end": "LCA front end", "constructed": "constructed network (B.3)"}


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (figures are written, never
    shown)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_corruption_curves(curves: dict[str, dict[str, dict[str, list[float]]]]) -> Any:
    """``curves[model][corruption] = {"mean": [6 values], "sd": [...]}`` -> a figure with one
    panel per corruption (accuracy vs severity 0..5)."""
    plt = pyplot()
    figure, axes = plt.subplots(1, len(CORRUPTIONS), figsize=(16, 3.4), sharey=True)
    for axis, corruption in zip(axes, CORRUPTIONS, strict=True):
        for model, per_corruption in curves.items():
            stats = per_corruption[corruption]
            mean, sd = np.asarray(stats["mean"]), np.asarray(stats["sd"])
            axis.plot(range(6), mean, marker="o", ms=3, label=MODEL_LABELS.get(model, model))
            axis.fill_between(range(6), mean - sd, mean + sd, alpha=0.15)
        axis.set_title(corruption.replace("_", " "))
        axis.set_xlabel("severity")
        axis.set_ylim(0, 1.02)
    axes[0].set_ylabel("test accuracy")
    axes[-1].legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    return figure


def plot_attack_curves(curves: dict[str, dict[str, dict[str, list[float]]]],
                       epsilons_linf: Sequence[float] = EPSILONS_LINF,
                       epsilons_l2: Sequence[float] = EPSILONS_L2) -> Any:
    """``curves[model][attack] = {"mean": [...], "sd": [...]}`` over ``epsilons_linf``
    (FGSM, PGD L-inf) and ``epsilons_l2`` (PGD L2)."""
    plt = pyplot()
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.4), sharey=True)
    for axis, attack in zip(axes, ("fgsm", "pgd_linf", "pgd_l2"), strict=True):
        epsilons = epsilons_l2 if attack == "pgd_l2" else epsilons_linf
        for model, per_attack in curves.items():
            mean, sd = np.asarray(per_attack[attack]["mean"]), np.asarray(per_attack[attack]["sd"])
            axis.plot(epsilons, mean, marker="o", ms=3, label=MODEL_LABELS.get(model, model))
            axis.fill_between(epsilons, mean - sd, mean + sd, alpha=0.15)
        axis.set_title({"fgsm": "FGSM (L-inf)", "pgd_linf": "PGD L-inf",
                        "pgd_l2": "PGD L2"}[attack])
        axis.set_xlabel("epsilon")
        axis.set_ylim(0, 1.02)
    axes[0].set_ylabel("test accuracy")
    axes[-1].legend(fontsize=7)
    figure.tight_layout()
    return figure


def plot_roc_curves(in_scores: dict[str, Sequence[float]],
                    out_scores: dict[str, dict[str, Sequence[float]]],
                    score_names: Sequence[str]) -> Any:
    """One panel per OOD set, one ROC curve per score (AUROC in the legend)."""
    plt = pyplot()
    names = list(out_scores)
    figure, axes = plt.subplots(1, len(names), figsize=(3.3 * len(names), 3.3), sharey=True)
    axes = np.atleast_1d(axes)
    for axis, name in zip(axes, names, strict=True):
        for score in score_names:
            fpr, tpr = roc_curve(in_scores[score], out_scores[name][score])
            area = auroc(in_scores[score], out_scores[name][score])
            axis.plot(fpr, tpr, label=f"{score} ({area:.2f})")
        axis.plot([0, 1], [0, 1], "k:", lw=0.7)
        axis.set_title(name.replace("_", " "))
        axis.set_xlabel("false-positive rate")
        axis.legend(fontsize=6, loc="lower right")
    axes[0].set_ylabel("true-positive rate")
    figure.tight_layout()
    return figure
