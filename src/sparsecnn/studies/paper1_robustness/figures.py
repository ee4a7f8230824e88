"""The figures of the robustness study beyond the library's curves
(:mod:`sparsecnn.robustness.figures`): anomaly-score histograms, check 27's front-end bars, the
constructed network against perturbation size, and the list of every figure of the report."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ...report.study import Figure
from ...robustness.figures import (
    MODEL_LABELS,
    plot_attack_curves,
    plot_corruption_curves,
    plot_roc_curves,
    pyplot,
)
from .budget import FRONT_END_ATOMS, FRONT_END_LAMBDA, Budget

__all__ = ["study_figures"]


def _histograms(in_scores: dict[str, Sequence[float]],
                out_scores: dict[str, dict[str, Sequence[float]]], score: str) -> Any:
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 3.4))
    values = [np.asarray(in_scores[score])] + [np.asarray(s[score]) for s in out_scores.values()]
    bins = np.histogram_bin_edges(np.concatenate(values), bins=40)
    axis.hist(values[0], bins=bins, alpha=0.6, density=True, label="in distribution (digits)",
              color="black")
    for name, data in zip(out_scores, values[1:], strict=True):
        axis.hist(data, bins=bins, histtype="step", density=True, label=name.replace("_", " "))
    axis.set_xlabel(score)
    axis.set_ylabel("density")
    axis.legend(fontsize=7)
    figure.tight_layout()
    return figure


def _check27_figure(seeds: list[dict[str, Any]]) -> Any:
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    names = ("relu_front_end", "lca_front_end")
    medians = [[s["front_end"][n]["median_minimal_targeted_l2"] for s in seeds] for n in names]
    drops = [[s["front_end"][n]["noise_drop"] for s in seeds] for n in names]
    for axis, data, title in ((left, medians, "median minimal targeted L2"),
                              (right, drops, "accuracy drop, Gaussian noise sigma = 0.3")):
        means = [float(np.mean(d)) for d in data]
        sds = [float(np.std(d, ddof=1)) if len(d) > 1 else 0.0 for d in data]
        axis.bar([MODEL_LABELS[n] for n in names], means, yerr=sds, color=["#888", "#2d7dd2"],
                 capsize=4)
        for i, d in enumerate(data):
            axis.scatter([i] * len(d), d, color="black", s=8, zorder=3)
        axis.set_title(title, fontsize=9)
    figure.tight_layout()
    return figure


def _world_figure(seeds: list[dict[str, Any]]) -> Any:
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6, 3.4))
    world = seeds[0]["feature_world"]
    rhos = np.asarray(world["multiples_of_radius"]) * world["certified_radius"]
    for key, label in (("accuracy_structured", "structured worst case"),
                       ("accuracy_random_sign", "random sign noise")):
        axis.plot(rhos, world[key], marker="o", label=label)
    axis.plot(np.asarray(world["pgd_multiples_of_radius"]) * world["certified_radius"],
              world["accuracy_pgd_linf"], marker="s", ls="--", label="PGD L-inf (3 steps)")
    axis.axvline(world["certified_radius"], color="k", ls="--", lw=0.8, label="certified radius")
    if world["structured_flip_radius_min"] is not None:
        axis.axvline(world["structured_flip_radius_min"], color="r", ls=":", lw=0.8,
                     label="smallest structured flip")
    axis.set_xlabel("rho (L-inf perturbation)")
    axis.set_ylabel("accuracy of the constructed network")
    axis.set_ylim(-0.02, 1.02)
    axis.legend(fontsize=7)
    figure.tight_layout()
    return figure



def study_figures(seeds: list[dict[str, Any]], aggregate: dict[str, Any],
                  budget: Budget) -> list[Figure]:
    """Every figure of the study's report section, from the per-seed results and their
    aggregate."""
    first = seeds[0]["anomaly"]
    score_names = ["max_softmax", "cnn.layer1.reconstruction_error",
                   "cnn.layer1.relative_reconstruction_error", "cnn.layer2.energy",
                   "lca_dictionary.reconstruction_error"]
    return [
        Figure.from_matplotlib(
            "robustness_corruptions", "Digits: test accuracy vs corruption severity (0 = clean) "
            f"for every model, mean +- sd over {budget.seeds} seed(s).",
            plot_corruption_curves(aggregate["corruption_curves"])),
        Figure.from_matplotlib(
            "robustness_attacks", "Digits: accuracy under white-box FGSM, PGD L-inf and PGD L2 "
            f"({budget.pgd_steps} steps) vs epsilon (pixels in [0, 1]).",
            plot_attack_curves(aggregate["attack_curves"])),
        Figure.from_matplotlib(
            "robustness_check27", "docs/theory.md check 27: LCA vs ReLU front end with the same "
            f"{FRONT_END_ATOMS}-atom dictionary and lam = {FRONT_END_LAMBDA} (bars: mean +- sd, "
            "dots: seeds).", _check27_figure(seeds)),
        Figure.from_matplotlib(
            "robustness_feature_world", "Feature world (default preset): the constructed "
            "network's accuracy vs L-inf perturbation size, with its certified radius.",
            _world_figure(seeds)),
        Figure.from_matplotlib(
            "robustness_feature_world_models", "Feature world (default preset): test accuracy "
            "vs corruption severity (0 = clean) for the trained B.3-architecture CNN, its k-step "
            "sparse-inference swaps (head refit), the proper-prior CNN and the constructed "
            f"network, mean +- sd over {budget.seeds} seed(s).",
            plot_corruption_curves(aggregate["feature_world"]["corruption_curves"])),
        Figure.from_matplotlib(
            "anomaly_roc", f"Anomaly identification (seed {seeds[0]['seed']}, held-out digit "
            f"{seeds[0]['held_out_class']}): ROC curves per out-of-distribution set; AUROC in "
            "the legend.", plot_roc_curves(first["in_scores"], first["out_scores"],
                                           score_names)),
        Figure.from_matplotlib(
            "anomaly_histograms", "Histogram of the CNN's first-layer reconstruction error "
            "||x - D a||^2 for held-in digits and each out-of-distribution set.",
            _histograms(first["in_scores"], first["out_scores"],
                        "cnn.layer1.reconstruction_error")),
    ]
