"""The k-step swap's figure (docs/theory.md A.8.2): clean accuracy against k before and after
fine-tuning, and the strong PGD's accuracy and attacked loss against eps (the masking check's
curve), on digits and on the feature world."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...report.study import Figure
from ...robustness.figures import pyplot
from .budget import STRONG_EPSILONS_LINF, Budget

__all__ = ["kstep_figures"]


def _mean_sd(values: list[list[float]] | list[float]) -> tuple[np.ndarray, np.ndarray]:
    array = np.asarray(values, dtype=np.float64)
    sd = array.std(axis=0, ddof=1) if len(array) > 1 else np.zeros(array.shape[1:])
    return array.mean(axis=0), sd


def _figure(per_seed: list[dict[str, Any]]) -> Any:
    steps = sorted(m["k"] for name, m in per_seed[0].items() if name.endswith("_tuned"))
    plt = pyplot()
    figure, axes = plt.subplots(1, 3, figsize=(10.5, 3.1))
    for key, label, style in (("clean_accuracy_swap_only", "swap only", "--"),
                              ("clean_accuracy", "swap + fine-tuning", "-")):
        mean, sd = _mean_sd([[s[f"cnn_k{k}_tuned"][key] for k in steps] for s in per_seed])
        axes[0].errorbar(steps, mean, yerr=sd, ls=style, marker="o", capsize=3, label=label)
    axes[0].set_xlabel("k (ISTA steps)")
    axes[0].set_ylabel("clean accuracy")
    axes[0].set_ylim(0, 1.02)
    axes[0].legend(fontsize=7, loc="lower left", frameon=False)
    for column, key, ylabel in ((1, "accuracy", "PGD L-inf accuracy"),
                                (2, "mean_loss", "mean attacked cross-entropy")):
        for k in (0, max(steps)):  # the strong attack runs on the compared pair only
            mean, sd = _mean_sd([s[f"cnn_k{k}_tuned"]["strong_pgd_linf"][key]
                                 for s in per_seed])
            axes[column].errorbar(STRONG_EPSILONS_LINF, mean, yerr=sd, marker="o", capsize=3,
                                  label=f"k = {k}")
        axes[column].set_xlabel("eps (L-inf, pixels in [0, 1])")
        axes[column].set_ylabel(ylabel)
        axes[column].legend(fontsize=7, frameon=False)
    axes[1].set_ylim(0, 1.02)
    figure.tight_layout()
    return figure


def kstep_figures(seeds: list[dict[str, Any]], budget: Budget) -> list[Figure]:
    """One figure per setting (digits, feature world), mean +- sd over seeds."""
    tuning = (f"each k fine-tuned from the one-shot CNN ({budget.finetune_epochs} epochs on "
              f"digits, {budget.world_finetune_epochs} on the world)")
    attack = (f"PGD L-inf, {budget.strong_pgd_steps} steps from zero and "
              f"{budget.pgd_restarts} random restart(s), worst case per image, first "
              f"{budget.n_attack} test images")
    return [
        Figure.from_matplotlib(
            "robustness_kstep", f"Digits, A.8.2 k-step swap ({tuning}): clean accuracy vs k, "
            f"and {attack}: accuracy and attacked loss vs eps (the loss must grow with eps: "
            f"masking check); mean +- sd over {budget.seeds} seed(s).",
            _figure([s["models"] for s in seeds])),
        Figure.from_matplotlib(
            "robustness_kstep_world", f"Feature world, A.8.2 k-step swap (calibrated, {tuning})"
            f": clean accuracy vs k, and {attack}: accuracy and attacked loss vs eps; mean +- "
            f"sd over {budget.seeds} seed(s).",
            _figure([s["feature_world"]["models"] for s in seeds])),
    ]
