"""The figures of the robustness study beyond the library's curves
(:mod:`sparsecnn.robustness.figures`): anomaly-score histograms, check 27's front-end bars, the
constructed network against perturbation size, and the list of every figure of the report."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ...report.study import Figure
from ...robustness.corruptions import CORRUPTIONS
from ...robustness.evaluation import EPSILONS_L2, EPSILONS_LINF
from ...robustness.figures import MODEL_LABELS, plot_roc_curves, pyplot
from .anomaly_protocol import BASELINES, SCORE
from .budget import Budget
from .check27 import ATOMS, LAMBDA_QUANTILE
from .kstep_figures import kstep_figures

__all__ = ["study_figures"]


BASELINE = "cnn_k0"
ATTACK_TITLES = {"fgsm": "FGSM (L-inf)", "pgd_linf": "PGD L-inf", "pgd_l2": "PGD L2"}


def _against_baseline(curves: dict[str, dict[str, dict[str, list[float]]]],
                      columns: dict[str, tuple[str, Sequence[float]]], xlabel: str,
                      legend_at: str) -> Any:
    """Small multiples: one row per model, one column per corruption or attack; each panel
    shows that model (colour) against the one-shot CNN (grey, dashed), mean +- sd band, so no
    panel holds more than two curves."""
    plt = pyplot()
    models = [m for m in curves if m != BASELINE]
    figure, axes = plt.subplots(len(models), len(columns), sharex="col", sharey=True,
                                figsize=(2.6 * len(columns), 1.9 * len(models) + 0.6),
                                squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, model in enumerate(models):
        for column, (key, (title, xs)) in enumerate(columns.items()):
            axis = axes[row, column]
            for name, colour, style in ((BASELINE, "#777777", "--"),
                                        (model, colours[row % len(colours)], "-")):
                if name not in curves:
                    continue
                mean = np.asarray(curves[name][key]["mean"])
                sd = np.asarray(curves[name][key]["sd"])
                axis.plot(xs, mean, style, color=colour, marker="o", ms=2.5,
                          label=MODEL_LABELS.get(name, name))
                axis.fill_between(xs, mean - sd, mean + sd, color=colour, alpha=0.15)
            axis.set_ylim(0, 1.02)
            if row == 0:
                axis.set_title(title, fontsize=9)
            if row == len(models) - 1:
                axis.set_xlabel(xlabel, fontsize=8)
            if column == 0:
                axis.set_ylabel(f"{MODEL_LABELS.get(model, model)}\naccuracy", fontsize=8)
            if column == len(columns) - 1:
                axis.legend(fontsize=7, loc=legend_at, frameon=False)
            axis.tick_params(labelsize=7)
    figure.tight_layout()
    return figure


def _corruption_panels(curves: dict[str, Any]) -> Any:
    columns = {c: (c.replace("_", " "), list(range(6))) for c in CORRUPTIONS}
    # accuracy falls with severity: the lower left corner is empty
    return _against_baseline(curves, columns, "severity (0 = clean)", "lower left")


def _attack_panels(curves: dict[str, Any]) -> Any:
    columns = {a: (t, EPSILONS_L2 if a == "pgd_l2" else EPSILONS_LINF)
               for a, t in ATTACK_TITLES.items()}
    # accuracy falls towards 0 at the largest epsilon: the upper right corner is empty
    return _against_baseline(curves, columns, "epsilon (pixels in [0, 1])", "upper right")


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
    figure, (left, right, zeros, curve) = plt.subplots(1, 4, figsize=(15, 3.2))
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
    fractions = [[s["front_end"][n]["zero_fraction"] for s in seeds] for n in names]
    zeros.bar([MODEL_LABELS[n] for n in names], [float(np.mean(f)) for f in fractions],
              color=["#888", "#2d7dd2"])
    low, high = seeds[0]["front_end"]["sparse_range"]
    zeros.axhspan(low, high, color="green", alpha=0.1, label="declared sparse range")
    zeros.set_ylim(0, 1)
    zeros.set_title("zero fraction of the codes (test digits)", fontsize=9)
    zeros.legend(fontsize=7, loc="lower right")
    for s in seeds:
        energy = s["front_end"]["dictionary_learning"]["energy_curve"]
        curve.plot(range(1, len(energy) + 1), energy, lw=0.8, label=f"seed {s['seed']}")
    curve.set_xlabel("minibatch")
    curve.set_ylabel("mean sparse-coding energy")
    curve.set_title("dictionary learning objective", fontsize=9)
    curve.legend(fontsize=6)
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
    score_names = [SCORE, "sparse_coding.energy", *BASELINES]
    return [
        Figure.from_matplotlib(
            "robustness_corruptions", "Digits: test accuracy vs corruption severity (0 = clean)"
            ", one row per model against the one-shot CNN (grey, dashed), mean +- sd over "
            f"{budget.seeds} seed(s).", _corruption_panels(aggregate["corruption_curves"])),
        Figure.from_matplotlib(
            "robustness_attacks", "Digits: accuracy under white-box FGSM, PGD L-inf and PGD L2 "
            f"({budget.pgd_steps} steps) vs epsilon, one row per model against the one-shot CNN"
            " (grey, dashed).", _attack_panels(aggregate["attack_curves"])),
        Figure.from_matplotlib(
            "robustness_check27", "docs/theory.md check 27: LCA (at its fixed point) vs ReLU "
            f"front end with the same {ATOMS}-atom dictionary for 64 pixels (centred digits, lam "
            f"the {LAMBDA_QUANTILE} quantile of D^T x on the training split): median minimal "
            "targeted L2, noise drop (bars: mean +- sd, dots: seeds), zero fractions and the "
            "dictionary-learning objective.", _check27_figure(seeds)),
        Figure.from_matplotlib(
            "robustness_feature_world", "Feature world (default preset): the constructed "
            "network's accuracy vs L-inf perturbation size, with its certified radius (no "
            "gradient attack: the network's input gradient is 0).",
            _world_figure(seeds), paper=2),
        Figure.from_matplotlib(
            "robustness_feature_world_models", "Feature world (default preset): test accuracy "
            "vs corruption severity (0 = clean) for the trained B.3-architecture CNN, its k-step "
            "sparse-inference swaps (fine-tuned), the proper-prior CNN and the constructed "
            f"network, one row per model against the trained one-shot CNN (grey, dashed), mean "
            f"+- sd over {budget.seeds} seed(s).",
            _corruption_panels(aggregate["feature_world"]["corruption_curves"]), paper=2),
        *kstep_figures(seeds, budget),
        Figure.from_matplotlib(
            "anomaly_roc", f"Anomaly identification (seed {seeds[0]['seed']}, held-out digit "
            f"{seeds[0]['held_out_class']}): ROC curves per out-of-distribution set; AUROC in "
            "the legend.", plot_roc_curves(first["in_scores"], first["out_scores"],
                                           score_names)),
        Figure.from_matplotlib(
            "anomaly_histograms", "Histogram of the declared anomaly score (relative "
            "reconstruction error under true sparse inference) for held-in digits and each "
            "out-of-distribution set.", _histograms(first["in_scores"], first["out_scores"],
                                                    SCORE)),
    ]
