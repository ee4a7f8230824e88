"""The claims of the robustness study, each with its verdict computed from the per-seed numbers
by the rule it states.

The constructed network (B.3) is not compared with the trained CNN under PGD on the feature
world: its input gradient is exactly 0 (hard thresholds), so PGD never moves the input and its
"accuracy 1.0" is an artefact of the masked gradient.  That comparison, with attacks that pass
the masking check (BPDA, the structured worst case, a gradient-free attack), is the paper-2
study's claim ``P2-B7-constructed-vs-trained-attacks``."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ...report.study import Claim, verdict
from .._paper1_common import mean_sd, paired, spread_claim, tabulate
from .anomaly_claims import anomaly_claims
from .budget import CLEAN_BUDGET
from .check27 import (
    MIN_ACTIVE_ATOMS,
    MIN_ZERO_FRACTION,
    c9_measurements,
    c9_rule,
    front_end_problem,
    unfooled_problem,
)
from .kstep_claims import kstep_claims
from .proper_priors import ALPHA, POWER, SMALLEST_EFFECT

__all__ = ["build_claims"]


def _spread_claim(claim_id: str, paper: int, statement: str, differences: dict[str, Any],
                  what: str, measured: dict[str, Any], *, units: dict[str, str] | None = None,
                  clean_gap: float | None = None) -> Claim:
    """The shared paired-difference claim (:func:`.._paper1_common.spread_claim`, margin 0) with
    the study's clean-accuracy guard: given ``clean_gap`` (difference of the compared models'
    mean clean accuracies), also inconclusive when it exceeds :data:`CLEAN_BUDGET`."""
    claim = spread_claim(claim_id, statement, differences, what, measured, paper=paper,
                         units=units)
    if clean_gap is None:
        return claim
    budget_ok = abs(clean_gap) <= CLEAN_BUDGET
    # a robustness gain bought with clean accuracy is not the comparison the claim is about
    reason = claim.reason
    if not budget_ok:
        reason = (f"the compared models' mean clean accuracies differ by {abs(clean_gap):.3f} "
                  f"(more than the {CLEAN_BUDGET:.0%} budget), so the robustness difference "
                  "is not measured at matched clean accuracy" +
                  (f"; besides, {reason[0].lower()}{reason[1:]}" if reason else "."))
    return dataclasses.replace(
        claim, measured={**claim.measured, "same_clean_accuracy_budget": bool(budget_ok),
                         "clean_accuracy_gap": float(clean_gap)},
        rule=claim.rule + "; inconclusive whenever the compared models' mean clean accuracies "
                          f"differ by more than {CLEAN_BUDGET:.0%} (not the same clean-accuracy "
                          "budget)",
        verdict=claim.verdict if budget_ok else "inconclusive", reason=reason)


def _in_regime(claim: Claim, problem: str, extra_rule: str = "") -> Claim:
    """Check 27's declared regime (:func:`.check27.front_end_problem`) in the rule; a set-up
    out of it makes the claim inconclusive with the problem as its reason."""
    rule = (claim.rule + extra_rule + f"; inconclusive whenever a front end's zero fraction on "
            f"the test images is outside [{MIN_ZERO_FRACTION}, 1 - {MIN_ACTIVE_ATOMS} / atoms] "
            "(sparse, with at least 5 active atoms on average), dictionary "
            "learning has not converged or LCA has not reached its tolerance (not the claim's "
            "regime)")
    if not problem:
        return dataclasses.replace(claim, rule=rule)
    return dataclasses.replace(claim, rule=rule, verdict="inconclusive",
                               reason=f"check 27's set-up is out of its regime: {problem}.")


def build_claims(seeds: list[dict[str, Any]],
                 proper: dict[str, tuple[list[dict[str, Any]], dict[str, Any]]] | None = None
                 ) -> list[Claim]:
    """Every claim of the study.  ``proper``: ``{"digits" | "world": (per-seed models, power
    summary)}`` of :func:`.proper_priors.powered_seeds` (default: the study's own seeds, no
    power analysis)."""
    proper = proper or {}
    claims = []
    front = [s["front_end"] for s in seeds]
    front_clean = {name: float(np.mean([f[name]["clean_accuracy"] for f in front]))
                   for name in ("relu_front_end", "lca_front_end")}
    front_gap = front_clean["lca_front_end"] - front_clean["relu_front_end"]
    relu_median = [f["relu_front_end"]["median_minimal_targeted_l2"] for f in front]
    lca_median = [f["lca_front_end"]["median_minimal_targeted_l2"] for f in front]
    problem = front_end_problem(front)
    regime = {"relu_zero_fraction": mean_sd([f["relu_front_end"]["zero_fraction"]
                                             for f in front]),
              "lca_zero_fraction": mean_sd([f["lca_front_end"]["zero_fraction"]
                                            for f in front]),
              "lca_iterations_to_tolerance": mean_sd([f["lca"]["n_iter"] for f in front]),
              "dictionary_energy_change_last_50": mean_sd(
                  [f["dictionary_learning"]["relative_change_last_50"] for f in front]),
              "n_atoms": front[0]["n_atoms"], "n_pixels": front[0]["n_pixels"],
              "lambda": mean_sd([f["lambda"] for f in front]),
              "lambda_rule": front[0]["lambda_rule"],
              "minimal_search": front[0]["minimal_search"]}
    claims.append(_in_regime(_spread_claim(
        "P1-C9-lca-targeted-l2", 1,
        "Check 27 (C9, Paiton et al. 2020): on digits the median minimal targeted L2 "
        "perturbation is larger for an LCA front end than for ReLU(W^T x + b) with the same "
        "dictionary.", paired(lca_median, relu_median),
        "median minimal targeted L2 (LCA) - (ReLU)",
        {"lca_median_l2": mean_sd(lca_median), "relu_median_l2": mean_sd(relu_median),
         "lca_clean_accuracy": mean_sd([f["lca_front_end"]["clean_accuracy"] for f in front]),
         "relu_clean_accuracy": mean_sd([f["relu_front_end"]["clean_accuracy"]
                                          for f in front]),
         "images_per_seed": [f["n_attacked"] for f in front],
         **c9_measurements(front), **regime},
        units={"lca_median_l2": "L2 norm of the image perturbation (pixels in [0, 1])"},
        clean_gap=front_gap), "; ".join(p for p in (problem, unfooled_problem(front)) if p),
        extra_rule=c9_rule()))
    relu_drop = [f["relu_front_end"]["noise_drop"] for f in front]
    lca_drop = [f["lca_front_end"]["noise_drop"] for f in front]
    claims.append(_in_regime(_spread_claim(
        "P1-C10-lca-noise-drop", 1,
        "Check 27 (C10, Teti et al. 2022): under additive Gaussian noise sigma = 0.3 the LCA "
        "front end's accuracy drop is <= the ReLU front end's (same dictionary).",
        paired(relu_drop, lca_drop),
        "accuracy drop (ReLU) - accuracy drop (LCA)",
        {"lca_drop": mean_sd(lca_drop), "relu_drop": mean_sd(relu_drop), **regime},
        units={"lca_drop": "accuracy points (fraction)"}, clean_gap=front_gap), problem))

    claims += kstep_claims([s["models"] for s in seeds], world=False)
    digits_models, digits_power = proper.get("digits", ([s["models"] for s in seeds], {}))
    claims.append(_proper_claim(
        "P1-A8-proper-prior-corruptions",
        "A.8.1: a CNN trained with proper priors (every hidden bias <= 0) is more robust to "
        "common corruptions than the unconstrained CNN: smaller mean accuracy drop.",
        digits_models, digits_power,
        {"max_hidden_bias_proper": max(s["models"]["cnn_proper_prior"]["max_hidden_bias"]
                                       for s in seeds)}))

    claims += kstep_claims([s["feature_world"]["models"] for s in seeds], world=True)
    world_models, world_power = proper.get(
        "world", ([s["feature_world"]["models"] for s in seeds], {}))
    claims.append(_proper_claim(
        "P1-A8-world-proper-prior-corruptions",
        "A.8.1 on the feature world: the CNN trained with proper priors (every hidden bias <= 0)"
        " has a smaller mean corruption accuracy drop than the unconstrained CNN.",
        world_models, world_power,
        {"max_hidden_bias_proper": max(s["feature_world"]["models"]["cnn_proper_prior"]
                                       ["max_hidden_bias"] for s in seeds)}))

    worlds = [s["feature_world"] for s in seeds]
    index = worlds[0]["multiples_of_radius"].index(1.0)
    # no PGD: the constructed network's input gradient is 0, so PGD never moves the input
    at_radius = [min(w["accuracy_structured"][index], w["accuracy_random_sign"][index])
                 for w in worlds]
    flips = [w["structured_flip_radius_min"] for w in worlds]
    ratio = [f / w["certified_radius"] for f, w in zip(flips, worlds, strict=True)
             if f is not None and w["certified_radius"] > 0]
    holds = all(w["well_posed"] and w["error_rate"] == 0 for w in worlds) and \
        min(at_radius) == 1.0 and all(f is None or f >= w["certified_radius"] * (1 - 1e-9)
                                      for f, w in zip(flips, worlds, strict=True))
    radius_units = {"certified_radius": "L-inf, pixel units"}
    claims.append(Claim(
        id="P2-B3-certified-radius", paper=2, kind="identity",
        statement="The constructed network's certified L-inf radius (theta_hi - theta_lo)/"
                  "(k^2 (A + V)) is valid: no image of the feature world is misclassified under"
                  " a structured worst-case or random-sign perturbation of that size (no "
                  "gradient attack: the network's input gradient is 0; gradient-free and BPDA "
                  "attacks are in P2-B7-constructed-vs-trained-attacks).",
        **tabulate({"certified_radius": mean_sd([w["certified_radius"] for w in worlds]),
                    "min_accuracy_at_radius": min(at_radius),
                    "smallest_structured_flip": mean_sd([f for f in flips if f is not None])
                    if any(f is not None for f in flips) else None,
                    "flip_over_certified": mean_sd(ratio) if ratio else None,
                    "images_per_seed": worlds[0]["n_images"]}, radius_units),
        rule="holds iff every world is well posed with zero clean error, accuracy is 1 under "
             "both perturbations at rho = radius, and no structured perturbation smaller than "
             "the radius flips an image",
        verdict=verdict(holds),
        reason="" if holds else (
            f"lowest accuracy at the certified radius {min(at_radius):.3f} (1 required); "
            f"worlds well posed with zero clean error: "
            f"{all(w['well_posed'] and w['error_rate'] == 0 for w in worlds)}."),
        units=radius_units))

    claims += anomaly_claims([s["anomaly"] for s in seeds])
    return claims


def _proper_claim(claim_id: str, statement: str, models: list[dict[str, Any]],
                  power: dict[str, Any], extra: dict[str, Any]) -> Claim:
    """A proper-prior corruption claim over every seed of :mod:`.proper_priors` (the study's
    own and the extra ones), by the study's paired-difference rule and clean-accuracy budget,
    with the power analysis in its measurements and, when the seeds run are fewer than the
    analysis needs and the rule leaves it inconclusive, in its reason (docs/theory.md
    A.8.1)."""
    def values(model: str, key: str) -> list[float]:
        return [m[model][key] for m in models]

    def drop(model: str) -> list[float]:
        return [c - m for c, m in zip(values(model, "clean_accuracy"),
                                      values(model, "mean_corruption_accuracy"), strict=True)]

    gap = float(np.mean(values("cnn_proper_prior", "clean_accuracy"))
                - np.mean(values("cnn_k0", "clean_accuracy")))
    differences = paired(drop("cnn_k0"), drop("cnn_proper_prior"))
    claim = _spread_claim(
        claim_id, 1, statement, differences, "mean corruption drop (plain) - (proper priors)",
        {"clean_accuracy_plain": mean_sd(values("cnn_k0", "clean_accuracy")),
         "clean_accuracy_proper": mean_sd(values("cnn_proper_prior", "clean_accuracy")),
         "drop_plain": mean_sd(drop("cnn_k0")), "drop_proper": mean_sd(drop("cnn_proper_prior")),
         **extra, **power},
        units={"drop_plain": "accuracy points (fraction)",
               "minimal_detectable_effect": "accuracy points (fraction)"}, clean_gap=gap)
    rule = (f"; seeds: the study's own as an internal pilot (its sd only), then as many as the "
            f"paired t-test needs to detect {SMALLEST_EFFECT:g} (1 point) of mean corruption "
            f"drop at power {POWER:g}, alpha {ALPHA:g}, capped by the time budget")
    claim = dataclasses.replace(claim, rule=claim.rule + rule)
    if claim.verdict != "inconclusive" or claim.reason.startswith("the compared models' mean"):
        return claim
    if not power:
        return dataclasses.replace(claim, reason=(
            f"inconclusive: {differences['n_seeds']} seed(s) give no spread, so no power "
            f"analysis; the effect is {differences['mean'] * 100:+.2f} points.  "
            f"{claim.reason}"))
    if power["seeds_run"] < power["seeds_needed"]:
        return dataclasses.replace(claim, reason=(
            f"inconclusive: {power['seeds_run']} seeds detect >= "
            f"{power['minimal_detectable_effect'] * 100:.2f} points (power {POWER:g}), the "
            f"effect is {differences['mean'] * 100:+.2f} points; "
            f"{power['seeds_needed']} seeds are needed for {SMALLEST_EFFECT * 100:g} point, "
            f"the time budget caps them at {power['seeds_cap']}.  {claim.reason}"))
    return dataclasses.replace(claim, reason=(
        f"{claim.reason}  Powered: {power['seeds_run']} seeds detect >= "
        f"{power['minimal_detectable_effect'] * 100:.2f} points (power {POWER:g})."))
