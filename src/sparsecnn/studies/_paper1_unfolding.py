"""Check 23 of paper 1 (docs/theory.md check 23, C1/C2): ML-ISTA with ``T`` unfoldings against
the feedforward ``T = 0`` network with the same parameters, both trained to convergence.

Declared before running (fixed here, never tuned on the outcome):

* **Training.**  Both networks get the same settings (Adam-W, learning rate, batch, epochs) and
  the same initialisation, data order and data; a fraction :data:`HOLDOUT` of the training split
  is held out.  Test accuracy is measured on the untouched test split.
* **Convergence.**  A network is converged when, averaged over seeds, its held-out
  cross-entropy fell by less than :data:`PLATEAU_TOLERANCE` (relative) over the last quarter of
  the budget, ``L(E) >= (1 - tol) L(3E/4)``: more training would not improve held-out fit.
* **Data.**  On the embedded digits the whole split; on a large dataset
  (:func:`~._paper1_common.is_large`) a seeded stratified subset of ``subset = (n_train,
  n_test)`` images, because unrolled ML-ISTA trains at ~1/20 of the plain network's speed
  (``T = 6`` unfoldings on 28x28 images: ~160 images/s on one core); the sizes used are in the
  claim's measurements.
* **Seeds.**  ``d = accuracy(T) - accuracy(0)`` per seed.  The first ``pilot`` seeds are an
  internal pilot (Wittes & Brittain 1990: only their sd is used, never their mean); the number
  of seeds is :func:`~._paper1_common.seeds_for_power` of that sd for the smallest effect of
  interest :data:`SMALLEST_EFFECT` (two-sided paired t-test, alpha 0.05, power 0.8), capped by
  the time budget.
* **Verdict** from the 95 % Student-t interval ``[lo, hi]`` of the mean of ``d``: holds if
  ``lo > 0`` (unfolding improves accuracy); does not hold if ``hi < SMALLEST_EFFECT`` (no
  improvement as large as the smallest effect of interest); inconclusive otherwise, and whenever
  a set-up check fails (different parameter counts, a network not converged), with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..data import DatasetSplit
from ..report.study import Claim, Measurement, StudyContext
from ..training import TrainingConfig, evaluate, train
from ._paper1_common import capped_split, mean_sd, paired, seeds_for_power, tabulate
from ._seeding import seeded_generator

__all__ = ["ALPHA", "HOLDOUT", "PLATEAU_TOLERANCE", "POWER", "SMALLEST_EFFECT", "UnfoldBudget",
           "converged", "seeds_needed", "train_unfolded", "unfold_claim", "unfold_verdict"]

#: fraction of the training split held out to judge convergence
HOLDOUT = 0.2
#: smallest accuracy difference of interest: one point (Sulam et al. report +0.37 points on
#: MNIST, but ~900 test digits and a seed-to-seed sd of about one point cannot resolve less in
#: the time budget of ``make reproduce``)
SMALLEST_EFFECT = 0.01
#: largest relative fall of the held-out loss over the last quarter of a converged run
PLATEAU_TOLERANCE = 0.05
ALPHA, POWER = 0.05, 0.8


@dataclass(frozen=True)
class UnfoldBudget:
    """Settings of check 23: ``pilot`` seeds first, then up to ``max_seeds`` in all;
    ``subset``: at most ``(n_train, n_test)`` images of the split (``None``: all of it)."""

    channels: tuple[int, ...]
    epochs: int
    batch: int
    learning_rate: float
    pilot: int
    max_seeds: int
    n_unfold: int = 6
    subset: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.subset is not None and (len(self.subset) != 2
                                        or not all(int(n) >= 10 for n in self.subset)):
            raise ValueError(f"subset must be None or (n_train, n_test), each >= 10; got "
                             f"{self.subset!r}")
        if self.epochs < 4 or self.epochs % 4:
            raise ValueError(f"epochs must be a multiple of 4 (the convergence check compares "
                             f"the last quarter); got {self.epochs!r}")
        if not 2 <= self.pilot <= self.max_seeds:
            raise ValueError(f"need 2 <= pilot <= max_seeds; got pilot={self.pilot!r}, "
                             f"max_seeds={self.max_seeds!r}")


def _hold_out(data: DatasetSplit, seed: int) -> DatasetSplit:
    """The training split cut into a fitting part (``train_*``) and a held-out part
    (``test_*``), by a permutation drawn from ``seed``."""
    n = data.train_images.shape[0]
    order = torch.randperm(n, generator=seeded_generator(seed))
    n_held = round(HOLDOUT * n)
    held, kept = order[:n_held], order[n_held:]
    return DatasetSplit(f"{data.name} (fit part)", data.train_images[kept],
                        data.train_labels[kept], data.train_images[held],
                        data.train_labels[held], data.n_classes)


def train_unfolded(budget: UnfoldBudget, seed: int, context: StudyContext) -> dict[str, Any]:
    """One seed: ``T = 0`` and ``T = n_unfold`` from the same initialisation and data order; the
    held-out loss every quarter of the budget and the final test accuracy."""
    data = capped_split(context, seed, budget.subset)
    fit = _hold_out(data, seed)
    results: dict[str, Any] = {"seed": seed, "n_fit": int(fit.train_labels.shape[0]),
                               "n_heldout": int(fit.test_labels.shape[0]),
                               "n_test": int(data.test_labels.shape[0])}
    for n_unfold in (0, budget.n_unfold):
        config = TrainingConfig(model="ml_ista", n_iter=n_unfold, channels=budget.channels,
                                strides=(1, 2), epochs=budget.epochs, batch_size=budget.batch,
                                learning_rate=budget.learning_rate, seed=seed)
        # the run's "test" set is the held-out part; evaluating it only each quarter keeps the
        # cost of the convergence check to four forward passes
        result = train(config, None, progress=False, dataset=fit,
                       eval_every=budget.epochs // 4)
        key = f"T{n_unfold}"
        results[f"{key}_accuracy"] = evaluate(result.model, data.test_images,
                                              data.test_labels)["accuracy"]
        results[f"{key}_parameters"] = sum(p.numel() for p in result.model.parameters())
        results[f"{key}_loss_curve"] = [m["train_loss_running"] for m in result.metrics]
        results[f"{key}_heldout_loss"] = {m["epoch"]: m["test_loss"] for m in result.metrics
                                          if "test_loss" in m}
    return results


def converged(unfolded: list[dict[str, Any]], key: str, epochs: int) -> dict[str, Any]:
    """The declared convergence check of one network (module docstring) over the seeds."""
    late = [u[f"{key}_heldout_loss"][epochs] for u in unfolded]
    earlier = [u[f"{key}_heldout_loss"][3 * epochs // 4] for u in unfolded]
    late_mean, earlier_mean = sum(late) / len(late), sum(earlier) / len(earlier)
    relative_fall = (earlier_mean - late_mean) / earlier_mean
    return {"heldout_loss_at_3/4": earlier_mean, "heldout_loss_at_end": late_mean,
            "relative_fall": relative_fall, "converged": relative_fall < PLATEAU_TOLERANCE}


def seeds_needed(pilot_differences: list[float], n_test: int) -> int:
    """Seeds for power :data:`POWER` at :data:`SMALLEST_EFFECT` from the pilot's sd of ``d``.
    The sd is floored at one test image (``1 / n_test``): accuracies are multiples of it, and a
    pilot whose differences happen to coincide says nothing smaller."""
    sd = max(mean_sd(pilot_differences)["sd"], 1.0 / n_test)
    return seeds_for_power(sd, SMALLEST_EFFECT, alpha=ALPHA, power=POWER)


def unfold_verdict(differences: list[float], *, n_needed: int, setup_problems: list[str]
                   ) -> tuple[str, str]:
    """Verdict and reason of check 23 from the per-seed differences (module docstring)."""
    n = len(differences)
    power_note = (f" Underpowered: n needed = {n_needed} (pilot sd, smallest effect "
                  f"{SMALLEST_EFFECT:g}, power {POWER:g}), n run = {n}." if n < n_needed else "")
    if setup_problems:
        return ("inconclusive",
                "The set-up is broken: " + "; ".join(setup_problems) + "." + power_note)
    if n < 2:
        return "inconclusive", "One seed gives no interval for d." + power_note
    row = Measurement.from_values("d", differences)
    interval = f"[{row.low:+.4f}, {row.high:+.4f}]"
    if row.low > 0:
        return "holds", ""
    if row.high < SMALLEST_EFFECT:
        if row.low > -SMALLEST_EFFECT:
            return "does not hold", (
                f"No difference at convergence: the 95 % interval {interval} of d (mean "
                f"{row.mean:+.4f} over {n} seeds) lies inside +-{SMALLEST_EFFECT:g}, the smallest "
                "effect of interest, so unfolding gives no improvement that large.")
        return "does not hold", (
            f"Unfolding is worse: the 95 % interval {interval} of d (mean {row.mean:+.4f} over "
            f"{n} seeds) lies below the smallest effect of interest {SMALLEST_EFFECT:g}.")
    return "inconclusive", (
        f"The 95 % interval {interval} of d (mean {row.mean:+.4f}, sd {row.sd:.4f} over {n} "
        f"seeds) contains both 0 and the smallest effect of interest {SMALLEST_EFFECT:g}."
        + power_note)


def unfold_claim(budget: UnfoldBudget, unfolded: list[dict[str, Any]], n_needed: int,
                 data_name: str) -> Claim:
    """The claim of check 23 with its measurement rows, rule and verdict."""
    t = budget.n_unfold
    differences = paired([u[f"T{t}_accuracy"] for u in unfolded],
                         [u["T0_accuracy"] for u in unfolded])
    checks = {key: converged(unfolded, key, budget.epochs) for key in ("T0", f"T{t}")}
    problems = [f"the T = 0 and T = {t} networks have different parameter counts"
                for u in unfolded[:1] if u["T0_parameters"] != u[f"T{t}_parameters"]]
    problems += [f"the {key} network is not converged: its mean held-out loss fell "
                 f"{100 * c['relative_fall']:.1f} % over the last quarter of {budget.epochs} "
                 f"epochs (>= {100 * PLATEAU_TOLERANCE:g} %)"
                 for key, c in checks.items() if not c["converged"]]
    verdict, reason = unfold_verdict(differences["values"], n_needed=n_needed,
                                     setup_problems=problems)
    measured = {
        "T0_accuracy": mean_sd([u["T0_accuracy"] for u in unfolded]),
        f"T{t}_accuracy": mean_sd([u[f"T{t}_accuracy"] for u in unfolded]),
        "difference": differences, "parameters": unfolded[0]["T0_parameters"],
        "channels": list(budget.channels), "epochs": budget.epochs, "batch": budget.batch,
        "learning_rate": budget.learning_rate, "smallest_effect": SMALLEST_EFFECT,
        "seeds_needed": n_needed, "seeds_run": len(unfolded), "pilot_seeds": budget.pilot,
        "n_fit": unfolded[0]["n_fit"], "n_heldout": unfolded[0]["n_heldout"],
        "n_test": unfolded[0]["n_test"],
        **{f"{key}_heldout_loss_relative_fall_last_quarter": round(c["relative_fall"], 4)
           for key, c in checks.items()}}
    return Claim(
        id="P1-check23-ml-ista", paper=1,
        statement=f"A stronger nonlinear transform (claim 5b; Sulam et al. C1/C2): {t} "
                  "unfoldings of joint multi-layer ISTA give higher test accuracy than the "
                  "feedforward (T = 0) network with identical parameters, both trained to "
                  f"convergence the same way on {data_name} (docs/theory.md check 23; "
                  "literature: +0.37 pts MNIST, +3.9 pts CIFAR-10).",
        **tabulate(measured),
        rule=f"d = accuracy(T = {t}) - accuracy(T = 0) per seed, 95 % t interval [lo, hi]; "
             f"holds if lo > 0, does not hold if hi < {SMALLEST_EFFECT:g} (the smallest effect "
             "of interest), inconclusive otherwise; inconclusive as well if the parameter "
             "counts differ or a network's mean held-out loss fell by >= "
             f"{100 * PLATEAU_TOLERANCE:g} % over the last quarter of training (not "
             f"converged). Seeds: power {POWER:g} at {SMALLEST_EFFECT:g} from the sd of the "
             f"first {budget.pilot} (internal pilot), at most {budget.max_seeds}.",
        verdict=verdict, reason=reason)

