"""The anomaly claims, judged on THE score declared in :mod:`.anomaly_protocol` (the relative
reconstruction error under true inference), against the standard baselines."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...report.study import Claim, spread_band, verdict
from .._paper1_common import mean_sd, paired, spread_claim, tabulate
from .anomaly_protocol import BASELINES, SCORE

__all__ = ["anomaly_claims"]


def anomaly_claims(per_seed: list[dict[str, Any]]) -> list[Claim]:
    tables = [s["table"] for s in per_seed]
    ood_sets = list(tables[0])

    def mean_auroc(score: str) -> list[float]:
        return [float(np.mean([t[o][score]["auroc"] for o in ood_sets])) for t in tables]

    per_set = {o: mean_sd([t[o][SCORE]["auroc"] for t in tables]) for o in ood_sets}
    failing = {o: v for o, v in per_set.items()
               if not (v["mean"] - 0.5 >= spread_band(v["sd"], v["n_seeds"])
                       and v["mean"] > 0.5)}
    baselines = {b: mean_sd(mean_auroc(b)) for b in BASELINES}
    context = {"auroc_mean_over_sets": {
        **baselines, "sparse_coding_energy": mean_sd(mean_auroc("sparse_coding.energy")),
        "cnn_layer1_reconstruction_error": mean_sd(
            mean_auroc("cnn.layer1.reconstruction_error"))}}
    claims = [Claim(
        id="P1-anomaly-reconstruction", paper=1,
        statement="Paper 1 (abstract): reading images as sparse codes identifies anomalies: the "
                  "relative reconstruction error of true (converged) sparse inference on a "
                  "dictionary learned from in-distribution images separates every "
                  "out-of-distribution set from held-in digits better than chance.",
        **tabulate({"auroc_per_set": per_set, "score": SCORE,
                    "in_distribution_median_relative_error": {
                        name: mean_sd([s["in_distribution_median_relative_error"][name]
                                       for s in per_seed])
                        for name in per_seed[0]["in_distribution_median_relative_error"]},
                    **context}),
        rule=f"score {SCORE} declared before running; holds iff for every OOD set the mean "
             "AUROC over seeds exceeds 0.5 by at least b = max(sd, t_0.975,n-1 sd / sqrt(n)) "
             "(one sd and the 95 % interval above chance); does not hold otherwise",
        verdict=verdict(not failing),
        reason="" if not failing else (
            "AUROC not above chance by one sd and its 95 % interval on "
            + ", ".join(f"{o.replace('_', ' ')} ({v['mean']:.3f} +- {v['sd']:.3f})"
                        for o, v in failing.items())
            + f" over {len(per_seed)} seed(s)."))]
    claims.append(spread_claim(
        "P1-anomaly-vs-softmax",
        "The sparse-coding score (relative reconstruction error under true inference) detects "
        "anomalies at least as well as the max-softmax baseline (mean AUROC over the OOD sets).",
        paired(mean_auroc(SCORE), mean_auroc("max_softmax")),
        "mean AUROC (sparse coding) - mean AUROC (max softmax)",
        {"auroc_sparse_coding": mean_sd(mean_auroc(SCORE)), **context}))
    best = [max(values) for values in zip(*(mean_auroc(b) for b in BASELINES), strict=True)]
    claims.append(spread_claim(
        "P1-anomaly-vs-best-baseline",
        "The sparse-coding score detects anomalies at least as well as the best of the standard "
        "baselines (max-softmax, energy score, Mahalanobis on penultimate features), per seed, "
        "by mean AUROC over the OOD sets.",
        paired(mean_auroc(SCORE), best),
        "mean AUROC (sparse coding) - max over baselines of mean AUROC",
        {"auroc_sparse_coding": mean_sd(mean_auroc(SCORE)),
         "auroc_best_baseline": mean_sd(best), **context}))
    return claims
