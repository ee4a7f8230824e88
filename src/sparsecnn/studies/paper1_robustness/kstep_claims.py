"""The k-step swap claims (docs/theory.md A.8.2), on digits and on the feature world.

Declared before running, fixed here: the judged variant is the largest ``k`` of the sweep
(A.8.2 is about replacing the one-shot code by the sparse code, which k-step ISTA approaches as
``k`` grows); every other ``k`` is reported beside it, never judged.  Its reference is the
one-shot CNN (``k = 0``) fine-tuned with the same budget (:mod:`.kstep`).  PGD is judged at
:data:`JUDGED_EPSILON`, with the radius sweep reported.  Besides the paired-difference rule and
the clean-accuracy budget (:func:`.claims._spread_claim`), a claim is inconclusive when its
set-up is broken, with the reason naming it: a failed gradient-masking check (PGD claims) or a
dead compared network (every head input 0 on every image).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ...report.study import Claim
from .._paper1_common import mean_sd, paired
from .budget import JUDGED_EPSILON, STRONG_EPSILONS_LINF

__all__ = ["kstep_claims"]


def _guarded(claim: Claim, broken: list[str], rule: str) -> Claim:
    """``claim`` with ``rule`` appended and, when ``broken`` names a broken set-up, the
    verdict inconclusive and the reason naming it first."""
    claim = dataclasses.replace(claim, rule=claim.rule + "; " + rule)
    if not broken:
        return claim
    reason = "broken set-up: " + "; ".join(broken) + (
        f".  Besides, {claim.reason}" if claim.reason else ".")
    return dataclasses.replace(claim, verdict="inconclusive", reason=reason)


def kstep_claims(per_seed: list[dict[str, Any]], *, world: bool) -> list[Claim]:
    """The corruption and PGD claims of the judged ``k`` over the per-seed model dicts
    (``{"cnn_k{k}_tuned": evaluation}``, :func:`.kstep.fine_tuned_swaps`)."""
    from .claims import _spread_claim  # claims.py imports this module

    steps = sorted(m["k"] for name, m in per_seed[0].items() if name.endswith("_tuned"))
    judged = max(steps)
    ref, name = "cnn_k0_tuned", f"cnn_k{judged}_tuned"
    where = "on the feature world" if world else "on digits"
    prefix = "P1-A8-world" if world else "P1-A8"
    index = STRONG_EPSILONS_LINF.index(JUDGED_EPSILON)

    def values(model: str, key: str) -> list[float]:
        return [s[model][key] for s in per_seed]

    def drop(model: str) -> list[float]:
        return [c - m for c, m in zip(values(model, "clean_accuracy"),
                                      values(model, "mean_corruption_accuracy"), strict=True)]

    def pgd_at(model: str, i: int = index) -> list[float]:
        return [s[model]["strong_pgd_linf"]["accuracy"][i] for s in per_seed]

    gap = float(np.mean(values(name, "clean_accuracy")) - np.mean(values(ref, "clean_accuracy")))
    sweep = {f"clean_accuracy_k{k}": mean_sd(values(f"cnn_k{k}_tuned", "clean_accuracy"))
             for k in steps}
    sweep.update({f"clean_accuracy_k{k}_swap_only": mean_sd(
        values(f"cnn_k{k}_tuned", "clean_accuracy_swap_only")) for k in steps})
    dead = {f"dead_fraction_k{k}": mean_sd(values(f"cnn_k{k}_tuned", "dead_fraction"))
            for k in steps}
    dead_broken = [f"the k={k} network is dead on {n_dead} seed(s) (every head input 0 on "
                   "every image: constant logits)"
                   for k, m in ((0, ref), (judged, name))
                   if (n_dead := sum(v == 1.0 for v in values(m, "dead_fraction")))]
    dead_rule = "inconclusive if a compared network is dead on any seed (dead fraction 1)"
    tuning = (f"each k fine-tuned end to end from the one-shot CNN with the same budget "
              f"({per_seed[0][ref]['finetune_epochs']} epochs, Adam lr "
              f"{per_seed[0][ref]['finetune_learning_rate']:g})")

    corruptions = _spread_claim(
        f"{prefix}-k{judged}-corruptions", 1,
        f"A.8.2 {where}: the CNN with its forward pass replaced by {judged}-step sparse "
        f"inference ({tuning}) has a smaller mean accuracy drop over 5 corruptions x 5 "
        "severities than the one-shot CNN tuned alike (judged: the largest k of the sweep "
        f"{steps}).",
        paired(drop(ref), drop(name)), f"mean corruption drop (k=0) - (k={judged})",
        {**sweep, **{f"drop_k{k}": mean_sd(drop(f"cnn_k{k}_tuned")) for k in steps}, **dead},
        units={"drop_k0": "accuracy points (fraction)"}, clean_gap=gap)
    claims = [_guarded(corruptions, dead_broken, dead_rule)]

    masking_broken = [
        f"the PGD masking check failed for k={k} on {failed} seed(s) (attacked loss not "
        "increasing with eps, or the input never moved)"
        for k, m in ((0, ref), (judged, name))
        if (failed := sum(not s[m]["strong_pgd_linf"]["masking_check_passed"]
                          for s in per_seed))]
    attack = per_seed[0][ref]["strong_pgd_linf"]
    measured: dict[str, Any] = {
        f"pgd_accuracy_k{k}_eps{eps:g}": mean_sd(pgd_at(f"cnn_k{k}_tuned", i))
        for k in (0, judged) for i, eps in enumerate(STRONG_EPSILONS_LINF)}
    measured.update({f"pgd_mean_loss_k{k}_eps{eps:g}": mean_sd(
        [s[f"cnn_k{k}_tuned"]["strong_pgd_linf"]["mean_loss"][i] for s in per_seed])
        for k in (0, judged) for i, eps in enumerate(STRONG_EPSILONS_LINF)})
    measured.update({**sweep, "pgd_steps": attack["steps"], "pgd_restarts": attack["restarts"],
                     "images_attacked_per_seed": attack["n_images"]})
    pgd_claim = _spread_claim(
        f"{prefix}-k{judged}-pgd", 1,
        f"A.8.2 {where}: {judged}-step sparse inference ({tuning}) raises accuracy under "
        f"white-box PGD L-inf (eps = {JUDGED_EPSILON:g}, {attack['steps']} steps, "
        f"{attack['restarts']} random restarts, through the unrolled iterations) over the "
        "one-shot CNN tuned alike.",
        paired(pgd_at(name), pgd_at(ref)), f"PGD accuracy (k={judged}) - (k=0)", measured,
        clean_gap=gap)
    claims.append(_guarded(pgd_claim, masking_broken + dead_broken,
                           "inconclusive if the masking check fails for either model on any "
                           "seed, or " + dead_rule))
    return claims
