"""Paper 1, trained models on digits or a larger dataset (docs/theory.md A.7, A.8; checks 9, 10
and 23).

* **Check 9** (claim 4 of the abstract): the complete model -- layered thresholding
  ``Gamma_l = ReLU(conv(Gamma_{l-1}, W_l) + b_l)`` plus logistic regression
  ``softmax(V vec(Gamma_L) + c)``, no normalisation, no pooling -- trained by cross-entropy on a
  50/50 stratified digits split reaches mean test accuracy >= 0.95 over the seeds; its softmax
  outputs sum to 1.  The 0.95 is calibrated on the embedded digits only: on any other dataset
  (``--data``) the target is relative, the accuracy of a *standard CNN of the same size*
  trained alike (same convolutions, each followed by batch normalisation, and 2x2 max pooling
  before the head: :func:`standard_cnn`; same optimizer, epochs, batch, seed, data order):
  per-seed ``d = accuracy(complete) - accuracy(standard)`` must satisfy ``d >= -0.02``
  (:data:`BASELINE_MARGIN`) by the spread rule of :mod:`._paper1_common`.
* **Check 10** (claim 5a, "maintain sparse priors"): the same model trained with every hidden
  bias projected onto ``b <= 0`` after every optimizer step has ``max(b) <= 0`` at every step;
  its fraction of zero hidden activations and its accuracy are compared with the unconstrained
  twin (same seed, same initialisation, same data order).  Expectation (not established in the
  literature): at least as sparse, accuracy within 2 points.
* **Check 23** (C1/C2, Sulam et al. 2018): a 2-layer convolutional sparse-coding classifier with
  ``T = 6`` unfoldings of joint multi-layer ISTA against the feedforward ``T = 0`` network with
  identical parameters (the same modules; only inference differs), both trained to a declared
  convergence criterion from the same initialisation, with a power analysis deciding the number
  of seeds (:mod:`._paper1_unfolding`).

Convergence of checks 9/10 (the criterion of check 23, :mod:`._paper1_unfolding`): the mean
over seeds of the test cross-entropy fell by less than 5 % from epoch ``floor(3E/4)`` to the
last epoch ``E`` (a diagnostic evaluated at those two epochs only; nothing is selected on it);
a network that fails it makes its accuracy claims inconclusive.

Budgets (chosen by size, :func:`._paper1_common.choose_budget`): :data:`QUICK` (a quick run,
whose large datasets are cut to a 2000/1000 subset), :data:`FULL` (the embedded digits and other
small datasets, whole split), :data:`LARGE` (a dataset with >= 20000 training images such as
MNIST / Fashion-MNIST / KMNIST at 28x28: checks 9/10 on the *whole* training and test sets,
2 seeds x 8 epochs of 3 networks on 2 torch threads -- ~1 min per epoch per network on one
core for 60k images;
check 23 on a seeded stratified subset of 4000 training (3200 fitted, 800 held out) and 2000
test images with 8/16 channels for 8 epochs, because unrolled ML-ISTA is ~20x slower than the
plain network).
The sizes used are in the claims' measurements and the study's results.

Each seed ``s`` uses split ``s`` and initialisation ``s``; numbers are mean +- sd over seeds and
comparisons use per-seed paired differences (:mod:`._paper1_common`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..report.study import (
    Claim,
    Figure,
    LiteratureRow,
    Study,
    StudyContext,
    StudyOutput,
    verdict_with_spread,
)
from ..report.study import verdict as verdict_from
from ..training import TrainingConfig, train
from ..training.models import MODELS, register_model
from ._paper1_common import (
    choose_budget,
    mean_sd,
    paired,
    shifted,
    spread_claim,
    spread_reason,
    tabulate,
    torch_threads,
)
from ._paper1_unfolding import (
    PLATEAU_TOLERANCE,
    UnfoldBudget,
    converged,
    seeds_needed,
    train_unfolded,
    unfold_claim,
)
from ._seeding import study_seeds

__all__ = ["BASELINE_MARGIN", "FULL", "LARGE", "QUICK", "STUDY", "Budget", "UnfoldBudget",
           "pair_rule", "run", "standard_cnn"]


@dataclass(frozen=True)
class Budget:
    """Seeds and training budgets of the study."""

    seeds: int
    complete_channels: tuple[int, ...]
    complete_epochs: int
    unfold: UnfoldBudget
    #: torch intra-op threads of the trainings (None: the study's setting, one thread)
    threads: int | None = None


# Check 23's settings: 24 epochs of batch 128 at learning rate 1e-2 (168 Adam steps).  The
# held-out loss is on its plateau by epoch 8-12 on seed 0 (12 epochs at 3e-3, 84 steps, left
# T = 6 still falling, at accuracy 0.925), but 16 epochs left the declared criterion's margin
# thin: T = 0's mean held-out loss fell 4.0 % over the last quarter on one machine and 6.8 %
# (not converged, >= 5 %) on a fresh clone with 2 threads; at 24 it rises in the last quarter
# for both.  The seed count is a power analysis's, capped at 9 to keep `make reproduce` within
# its 10 minutes.  --quick's smaller networks need 24 epochs too: their mean held-out loss still
# fell 16 % (T = 0) and 31 % (T = 6) over the last quarter of 8 epochs and 11 % (T = 6) over
# that of 16.
# --quick's check 23 keeps at most 1000/1000 images: the whole embedded digits split (~900 per
# half), a smaller part of a quick run's 2000/1000 subset of a large dataset, on whose 28x28
# images T = 6 trains ~12x slower than on 8x8 digits.
QUICK = Budget(seeds=2, complete_channels=(16, 32), complete_epochs=20,
               unfold=UnfoldBudget(channels=(8, 16), epochs=24, batch=128, learning_rate=1e-2,
                                   pilot=2, max_seeds=2, subset=(1000, 1000)))
FULL = Budget(seeds=5, complete_channels=(32, 64), complete_epochs=30,
              unfold=UnfoldBudget(channels=(16, 32), epochs=24, batch=128, learning_rate=1e-2,
                                  pilot=5, max_seeds=9))
# Fashion-MNIST at full scale (and any dataset with >= 20000 training images): one network of
# checks 9/10 (32/64 channels, 4 epochs of 60k images, evaluations at epochs 3 and 4) took
# 224 s wall / 334 s CPU on 2 threads (27-36 s per epoch, ~34 s per evaluation of the 70k
# training + test images), so 2 seeds x 3 networks ~ 22 min; on seed 0 its test loss went
# 0.267 -> 0.284 from epoch 3 to 4 (test accuracy 0.904 -> 0.906): on the plateau, so the
# declared criterion has a margin.  Check 23's T = 6 network
# trains at ~160 img/s on 28x28 (16/32 channels), hence the subset; on 1600 fitted images its
# held-out loss changed by < 3 % from epoch 3 to 4 (T = 0: +0.5 %, T = 6: -2.1 %, seed 0), so
# 8 epochs of twice as many images leave the declared criterion a margin.
# A full Fashion-MNIST run at 4 epochs then found the standard CNN (batch norm, max-pooling)
# still falling (mean test loss -9.5 % from epoch 3 to 4): its guard made check 9 inconclusive,
# so the budget is 8 epochs (evaluations at 6 and 8), about 11 min per seed for checks 9/10.
# The 8-epoch run (commit 0630eec) left check 9 on 2 seeds with a 95 % interval of +-0.057
# around its difference (t_0.975,1 = 12.7): under the interval rule two seeds settle nothing
# short of a 6-point effect, so 3 seeds (t = 4.3).
LARGE = Budget(seeds=3, complete_channels=(32, 64), complete_epochs=8,
               unfold=UnfoldBudget(channels=(8, 16), epochs=8, batch=128, learning_rate=1e-2,
                                   pilot=2, max_seeds=3, subset=(4000, 2000)),
               threads=2)

#: check 9's absolute target, calibrated on the embedded digits only
ACCURACY_TARGET = 0.95
#: elsewhere: the complete model within 2 points of the standard CNN trained alike
BASELINE_MARGIN = 0.02
#: the registry name of the standard CNN baseline
STANDARD_CNN = "standard_cnn"
SPARSITY_MARGIN = 0.0
ACCURACY_MARGIN = 0.02


def _softmax_sum_error(model: nn.Module, images: torch.Tensor) -> float:
    """``max |sum_c softmax(logits)_c - 1|`` in float64."""
    double = model.to(torch.float64)
    with torch.no_grad():
        probabilities = torch.softmax(double(images.to(torch.float64)), dim=1)
    model.to(torch.float32)
    return float((probabilities.sum(1) - 1).abs().max())


def _has_no_normalisation_or_pooling(model: nn.Module) -> bool:
    forbidden = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm,
                 nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
                 nn.modules.pooling._AdaptiveMaxPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd)
    return not any(isinstance(module, forbidden) for module in model.modules())


class _StandardCNN(nn.Module):
    def __init__(self, in_channels: int, channels: tuple[int, ...], strides: tuple[int, ...],
                 image_size: tuple[int, int], n_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        height, width = image_size
        previous = in_channels
        for out_channels, stride in zip(channels, strides, strict=True):
            layers += [nn.Conv2d(previous, out_channels, 3, stride=stride, padding=1),
                       nn.BatchNorm2d(out_channels), nn.ReLU()]
            height, width = (height - 1) // stride + 1, (width - 1) // stride + 1
            previous = out_channels
        layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(previous * (height // 2) * (width // 2), n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def standard_cnn(config: TrainingConfig, image_shape: tuple[int, ...], n_classes: int
                 ) -> nn.Module:
    """Check 9's baseline off the digits: the complete model's convolutions (3x3, padding 1,
    ``config.channels`` / ``config.strides``) each followed by batch normalisation, then ReLU,
    then 2x2 max pooling before the linear head -- the standard CNN components the complete
    model (A.7: no normalisation, no pooling) does without."""
    return _StandardCNN(image_shape[0], config.channels, config.strides,
                        (image_shape[1], image_shape[2]), n_classes)


if STANDARD_CNN not in MODELS:
    register_model(STANDARD_CNN, standard_cnn)


def pair_rule(data_name: str) -> str:
    """Which check-9 rule applies: ``"absolute"`` (mean accuracy >= :data:`ACCURACY_TARGET`)
    on the embedded digits it was calibrated on, ``"baseline"`` (within
    :data:`BASELINE_MARGIN` of :func:`standard_cnn` trained alike) on any other dataset."""
    return "absolute" if data_name == "digits" else "baseline"


def _test_loss(result: Any) -> dict[int, float]:
    return {m["epoch"]: m["test_loss"] for m in result.metrics if "test_loss" in m}


def _train_pair(budget: Budget, seed: int, context: StudyContext) -> dict[str, Any]:
    """Check 9/10 for one seed: the complete model and its proper-prior twin (and off the
    digits the standard CNN baseline), each evaluated at epochs ``floor(3E/4)`` and ``E``."""
    with torch_threads(budget.threads):
        return _train_pair_threads(budget, seed, context)


def _train_pair_threads(budget: Budget, seed: int, context: StudyContext) -> dict[str, Any]:
    data = context.classification_split(seed)
    base = TrainingConfig(model="cnn", channels=budget.complete_channels, strides=(1, 2),
                          epochs=budget.complete_epochs, batch_size=64, seed=seed)
    # evaluation at 3E/4 and E only: the convergence criterion needs those two test losses
    eval_every = max(1, 3 * base.epochs // 4)
    free = train(base, None, progress=False, dataset=data, eval_every=eval_every)
    baseline: dict[str, Any] = {}
    if pair_rule(context.data) == "baseline":
        standard = train(TrainingConfig.from_dict({**base.to_dict(), "model": STANDARD_CNN}),
                         None, progress=False, dataset=data, eval_every=eval_every)
        baseline = {"standard_accuracy": standard.final["test_accuracy"],
                    "standard_heldout_loss": _test_loss(standard),
                    "standard_loss_curve": [m["train_loss_running"] for m in standard.metrics]}
    bias_trace: list[float] = []

    def record(event: str, info: dict[str, Any]) -> None:
        if event == "step":
            bias_trace.append(info["max_hidden_bias"])

    proper_config = TrainingConfig.from_dict({**base.to_dict(), "proper_prior": True})
    proper = train(proper_config, None, progress=False, dataset=data,
                   eval_every=eval_every, callback=record)
    free_biases = torch.cat([p.detach().flatten() for name, p in free.model.named_parameters()
                             if name.endswith("bias") and not name.startswith("head")])
    return {
        "seed": seed,
        "free_accuracy": free.final["test_accuracy"],
        "free_zero_fraction": free.final["zero_fraction"],
        "free_max_bias_any_step": free.final["max_hidden_bias_any_step"],
        "free_positive_bias_fraction": float((free_biases > 0).double().mean()),
        "proper_accuracy": proper.final["test_accuracy"],
        "proper_zero_fraction": proper.final["zero_fraction"],
        "proper_max_bias_any_step": max(bias_trace),
        "proper_steps_checked": len(bias_trace),
        "softmax_sum_error": _softmax_sum_error(free.model, data.test_images),
        "free_loss_curve": [m["train_loss_running"] for m in free.metrics],
        "proper_loss_curve": [m["train_loss_running"] for m in proper.metrics],
        "no_normalisation_or_pooling": _has_no_normalisation_or_pooling(free.model),
        "free_heldout_loss": _test_loss(free), "proper_heldout_loss": _test_loss(proper),
        "n_train": int(data.train_labels.shape[0]), "n_test": int(data.test_labels.shape[0]),
        **baseline,
    }


def _figure(pairs: list[dict[str, Any]], unfolded: list[dict[str, Any]], n_unfold: int,
            data_name: str = "digits") -> Figure:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    groups = [("CNN\n(check 9)", [p["free_accuracy"] for p in pairs]),
              *([("standard CNN\n(baseline)", [p["standard_accuracy"] for p in pairs])]
                if "standard_accuracy" in pairs[0] else []),
              ("b <= 0\n(check 10)", [p["proper_accuracy"] for p in pairs]),
              ("ML-ISTA T=0\n(check 23)", [u["T0_accuracy"] for u in unfolded]),
              (f"ML-ISTA T={n_unfold}", [u[f"T{n_unfold}_accuracy"] for u in unfolded])]
    for index, (_, values) in enumerate(groups):
        left.bar(index, np.mean(values), yerr=np.std(values, ddof=1) if len(values) > 1 else 0,
                 color="tab:orange" if "ML-ISTA" in groups[index][0] else "tab:blue", capsize=4)
        left.scatter([index] * len(values), values, color="k", s=8, zorder=3)
    if pair_rule(data_name) == "absolute":
        left.axhline(ACCURACY_TARGET, color="tab:red", linestyle="--", linewidth=1)
    left.set_xticks(range(len(groups)), [g[0] for g in groups], fontsize=8)
    low = min(min(v) for _, v in groups)
    left.set_ylim(max(0.0, low - 0.05), 1.0)
    left.set_ylabel(f"test accuracy ({data_name})")
    sparsity = [("unconstrained", [p["free_zero_fraction"] for p in pairs]),
                ("b <= 0", [p["proper_zero_fraction"] for p in pairs])]
    for index, (_, values) in enumerate(sparsity):
        right.bar(index, np.mean(values), yerr=np.std(values, ddof=1) if len(values) > 1 else 0,
                  color="tab:green", capsize=4)
        right.scatter([index] * len(values), values, color="k", s=8, zorder=3)
    right.set_xticks(range(2), [s[0] for s in sparsity])
    right.set_ylabel("fraction of zero hidden activations")
    figure.tight_layout()
    return Figure.from_matplotlib(
        "paper1_models_accuracy",
        f"Test accuracy on {data_name} (mean +- sd, dots = seeds) of the complete model, its "
        "proper-prior twin and the ML-ISTA pair; right: sparsity of the hidden codes.", figure)


def _training_curves(pairs: list[dict[str, Any]], unfolded: list[dict[str, Any]],
                     n_unfold: int) -> Figure:
    """One panel per compared pair (small multiples): running training loss per epoch, one
    thin line per seed and the mean over seeds in bold, so convergence can be judged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    panels = [("complete model vs b <= 0 (checks 9, 10)",
               [("unconstrained", "tab:blue", [p["free_loss_curve"] for p in pairs]),
                ("b <= 0", "tab:green", [p["proper_loss_curve"] for p in pairs]),
                *([("standard CNN", "tab:gray", [p["standard_loss_curve"] for p in pairs])]
                  if "standard_loss_curve" in pairs[0] else [])]),
              (f"ML-ISTA T = 0 vs T = {n_unfold} (check 23)",
               [("T = 0", "tab:orange", [u["T0_loss_curve"] for u in unfolded]),
                (f"T = {n_unfold}", "tab:purple",
                 [u[f"T{n_unfold}_loss_curve"] for u in unfolded])])]
    figure, axes = plt.subplots(1, len(panels) + 1, figsize=(13, 3.2))
    for axis, (title, series) in zip(axes, panels, strict=False):
        for label, colour, curves in series:
            epochs = np.arange(1, len(curves[0]) + 1)
            for curve in curves:
                axis.plot(epochs, curve, color=colour, alpha=0.3, linewidth=0.8)
            axis.plot(epochs, np.mean(curves, axis=0), color=colour, linewidth=2,
                      label=f"{label} (mean of {len(curves)})")
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylabel("training loss (running mean)")
        axis.set_yscale("log")
        axis.legend(fontsize=8, frameon=False)
    # check 23's convergence criterion is judged on this held-out loss (last quarter shaded)
    heldout = axes[-1]
    for key, label, colour in (("T0", "T = 0", "tab:orange"),
                               (f"T{n_unfold}", f"T = {n_unfold}", "tab:purple")):
        curves = [u[f"{key}_heldout_loss"] for u in unfolded]
        epochs = sorted(curves[0])
        for curve in curves:
            heldout.plot(epochs, [curve[e] for e in epochs], color=colour, alpha=0.3,
                         linewidth=0.8, marker=".")
        heldout.plot(epochs, [np.mean([c[e] for c in curves]) for e in epochs], color=colour,
                     linewidth=2, marker="o", label=f"{label} (mean of {len(curves)})")
    heldout.axvspan(3 * epochs[-1] / 4, epochs[-1], color="0.9", zorder=0)
    heldout.set_title("check 23: held-out loss (convergence judged on the shaded quarter)",
                      fontsize=9)
    heldout.set_xlabel("epoch")
    heldout.xaxis.set_major_locator(MaxNLocator(integer=True))
    heldout.set_ylabel("held-out cross-entropy")
    heldout.legend(fontsize=8, frameon=False)
    figure.tight_layout()
    return Figure.from_matplotlib(
        "paper1_models_training", "Training curves: running cross-entropy per epoch, thin lines"
        " per seed, bold the mean; right: check 23's held-out loss, on which its convergence "
        "criterion is judged (a mean falling by 5 % or more over the shaded last quarter means "
        "not converged).", figure)


def _plateau(pairs: list[dict[str, Any]], key: str, epochs: int) -> dict[str, Any]:
    """Check 23's convergence criterion on the test loss of network ``key`` of checks 9/10;
    a budget under 2 epochs has no epoch ``floor(3E/4) >= 1`` to compare with, so it cannot
    be judged (``relative_fall`` None, not converged)."""
    if 3 * epochs // 4 < 1:
        return {"relative_fall": None, "converged": False}
    return converged(pairs, key, epochs)


def _budget_name(budget: Budget) -> str:
    return {id(QUICK): "quick", id(FULL): "full", id(LARGE): "large"}.get(id(budget), "custom")


def _unless_converged(claim: Claim, problems: list[str]) -> Claim:
    """``claim`` made inconclusive, with the reason, when a compared network failed the
    declared convergence criterion: no verdict rests on an under-trained model."""
    if not problems:
        return claim
    claim.rule = claim.rule if "converged" in claim.rule else claim.rule + (
        f"; inconclusive whenever a compared network's mean test loss fell by >= "
        f"{100 * PLATEAU_TOLERANCE:g} % from epoch floor(3E/4) to E (not converged)")
    claim.reason = ("The set-up is broken: " + "; ".join(problems) + ". " + claim.reason).strip()
    claim.verdict = "inconclusive"
    return claim


def _run_unfolded(budget: UnfoldBudget, context: StudyContext
                  ) -> tuple[list[dict[str, Any]], int]:
    """Check 23's seeds: the internal pilot, then as many more as the power analysis asks for
    (at most ``budget.max_seeds``); returns the per-seed results and the number needed."""
    seeds = study_seeds(context.seed, budget.max_seeds)
    unfolded = [context.unit(f"check23-seed{seed}",
                             lambda seed=seed: train_unfolded(budget, seed, context))
                for seed in context.progress(seeds[:budget.pilot],
                                             desc="check 23: ML-ISTA pilot")]
    n_test = unfolded[0]["n_test"]
    n_needed = seeds_needed([u[f"T{budget.n_unfold}_accuracy"] - u["T0_accuracy"]
                             for u in unfolded], n_test)
    more = seeds[budget.pilot:max(budget.pilot, min(n_needed, budget.max_seeds))]
    unfolded += [context.unit(f"check23-seed{seed}",
                              lambda seed=seed: train_unfolded(budget, seed, context))
                 for seed in context.progress(more, desc="check 23: ML-ISTA")]
    return unfolded, n_needed


def run(context: StudyContext) -> StudyOutput:
    budget = choose_budget(context, QUICK, FULL, LARGE)
    seeds = study_seeds(context.seed, budget.seeds)
    data_name = context.data
    pairs = [context.unit(f"seed{seed}", lambda seed=seed: _train_pair(budget, seed, context))
             for seed in context.progress(seeds, desc="checks 9/10: complete model")]
    unfolded, n_needed = _run_unfolded(budget.unfold, context)
    claims: list[Claim] = []

    accuracy = mean_sd([p["free_accuracy"] for p in pairs])
    softmax_error = max(p["softmax_sum_error"] for p in pairs)
    architecture_ok = all(p["no_normalisation_or_pooling"] for p in pairs)
    rule_kind = pair_rule(data_name)
    networks = ["free", "proper"] + (["standard"] if rule_kind == "baseline" else [])
    plateau = {key: _plateau(pairs, key, budget.complete_epochs) for key in networks}
    not_converged = [f"the {key} network is not converged: its mean test loss fell "
                     f"{100 * c['relative_fall']:.1f} % over the last quarter of "
                     f"{budget.complete_epochs} epochs (>= {100 * PLATEAU_TOLERANCE:g} %)"
                     if c["relative_fall"] is not None else
                     f"the {key} network's convergence cannot be judged: "
                     f"{budget.complete_epochs} epoch(s) leave no evaluation at epoch "
                     "floor(3E/4) >= 1"
                     for key, c in plateau.items() if not c["converged"]]
    scale = {"channels": list(budget.complete_channels), "epochs": budget.complete_epochs,
             "dataset": data_name, "n_train": pairs[0]["n_train"], "n_test": pairs[0]["n_test"],
             **{f"{key}_test_loss_relative_fall_last_quarter": round(c["relative_fall"], 4)
                for key, c in plateau.items() if c["relative_fall"] is not None}}
    convergence_rule = (f"; inconclusive whenever a compared network's mean test loss fell by "
                        f">= {100 * PLATEAU_TOLERANCE:g} % from epoch floor(3E/4) to E (not "
                        "converged)")
    claim4 = ("A CNN without normalisation and pooling is hierarchical sparse coding plus "
              "logistic regression (claim 4): the complete model (layered thresholding + "
              f"softmax), trained by cross-entropy on {data_name}, ")
    if rule_kind == "absolute":
        check9 = Claim(
            id="P1-check9-complete-model", paper=1,
            statement=claim4 + f"reaches mean test accuracy >= {ACCURACY_TARGET} (a target "
                      "calibrated on the embedded digits; docs/theory.md check 9).",
            **tabulate({"test_accuracy": accuracy, "target": ACCURACY_TARGET, **scale}),
            rule=f"holds if mean - {ACCURACY_TARGET} >= b, does not hold if mean - "
                 f"{ACCURACY_TARGET} <= -b, inconclusive otherwise, b = max(sd, t_0.975,n-1 "
                 "sd / sqrt(n)) over seeds" + convergence_rule,
            verdict=verdict_with_spread(accuracy["mean"] - ACCURACY_TARGET, accuracy["sd"],
                                        n=accuracy["n_seeds"]),
            reason=spread_reason(shifted(accuracy, ACCURACY_TARGET),
                                 f"test accuracy - {ACCURACY_TARGET}"))
    else:
        check9 = spread_claim(
            "P1-check9-complete-model",
            claim4 + f"reaches the test accuracy of a standard CNN of the same size (batch "
            "normalisation + 2x2 max pooling) trained with the same budget, within "
            f"{100 * BASELINE_MARGIN:g} points (docs/theory.md check 9).",
            paired([p["free_accuracy"] for p in pairs],
                   [p["standard_accuracy"] for p in pairs]),
            "accuracy(complete model) - accuracy(standard CNN)",
            {"test_accuracy": accuracy,
             "standard_cnn_accuracy": mean_sd([p["standard_accuracy"] for p in pairs]),
             **scale},
            margin=BASELINE_MARGIN, units={"margin": "accuracy (fraction)"})
        check9.rule += convergence_rule
    claims.append(_unless_converged(check9, not_converged))
    claims.append(Claim(
        id="P1-check9-softmax", paper=1, kind="identity",
        statement="The complete model's class probabilities softmax(V Gamma_L + c) sum to 1 "
                  "and it has no normalisation or pooling layer (docs/theory.md check 9).",
        measured={"max_abs_softmax_sum_error_float64": softmax_error,
                  "no_normalisation_or_pooling": architecture_ok},
        rule="holds iff the largest |sum of softmax - 1| over the test sets is <= 1e-12 and "
             "no module is a normalisation or pooling layer",
        verdict=verdict_from(softmax_error <= 1e-12 and architecture_ok)))

    max_bias = max(p["proper_max_bias_any_step"] for p in pairs)
    claims.append(Claim(
        id="P1-check10-proper-priors", paper=1, kind="identity",
        statement="Maintaining sparse priors (claim 5a): with the projection b <- min(b, 0) "
                  "after every optimizer step, every hidden bias is <= 0 at every step, i.e. "
                  "every prior is a proper exponential prior (docs/theory.md check 10).",
        **tabulate({"max_hidden_bias_over_all_steps": max_bias,
                  "steps_checked": sum(p["proper_steps_checked"] for p in pairs),
                  "unconstrained_twin_max_bias_any_step":
                      max(p["free_max_bias_any_step"] for p in pairs),
                  "unconstrained_twin_positive_bias_fraction":
                      mean_sd([p["free_positive_bias_fraction"] for p in pairs])}),
        rule="holds iff the largest hidden bias recorded after any step of any seed is <= 0",
        verdict=verdict_from(max_bias <= 0.0)))
    claims.append(spread_claim(
        "P1-check10-sparsity",
        "Expectation (not established in the literature): the proper-prior model is at least "
        "as sparse as its unconstrained twin (fraction of zero hidden activations on the test "
        "set; docs/theory.md check 10).",
        paired([p["proper_zero_fraction"] for p in pairs],
               [p["free_zero_fraction"] for p in pairs]),
        "zero fraction(b <= 0) - zero fraction(unconstrained)",
        {"proper_zero_fraction": mean_sd([p["proper_zero_fraction"] for p in pairs]),
         "unconstrained_zero_fraction": mean_sd([p["free_zero_fraction"] for p in pairs])},
        margin=SPARSITY_MARGIN))
    claims.append(_unless_converged(spread_claim(
        "P1-check10-accuracy",
        "Expectation: keeping the priors proper costs at most 2 points of test accuracy "
        "(docs/theory.md check 10).",
        paired([p["proper_accuracy"] for p in pairs], [p["free_accuracy"] for p in pairs]),
        "accuracy(b <= 0) - accuracy(unconstrained)",
        {"proper_accuracy": mean_sd([p["proper_accuracy"] for p in pairs]),
         "unconstrained_accuracy": accuracy},
        margin=ACCURACY_MARGIN, units={"margin": "accuracy (fraction)"}),
        [p for p in not_converged if "standard" not in p]))

    n_unfold = budget.unfold.n_unfold
    t_key = f"T{n_unfold}_accuracy"
    t0_mean = mean_sd([u["T0_accuracy"] for u in unfolded])["mean"]
    tn_mean = mean_sd([u[t_key] for u in unfolded])["mean"]
    unfolding = unfold_claim(budget.unfold, unfolded, n_needed, data_name)
    claims.append(unfolding)

    summary = (f"Complete model on {data_name}: test accuracy {accuracy['mean']:.3f} +- "
               f"{accuracy['sd']:.3f} over {len(seeds)} seeds; with b <= 0: "
               f"{mean_sd([p['proper_accuracy'] for p in pairs])['mean']:.3f}; ML-ISTA "
               f"T={n_unfold}: {tn_mean:.3f} vs T=0: {t0_mean:.3f} over {len(unfolded)} seeds "
               f"(power analysis: {n_needed} needed).")
    literature = [LiteratureRow(
        "P1-check23-ml-ista", "J. Sulam, A. Aberdam, A. Beck, M. Elad, On multi-layer basis "
        "pursuit, efficient algorithms and convolutional neural networks, IEEE TPAMI 42(8), "
        "2020 (arXiv:1806.00701)",
        "MNIST and CIFAR-10, the same parameters with and without unfolding; ours: "
        f"{data_name}, T = 0 vs T = {n_unfold}, {budget.unfold.epochs} epochs to the held-out "
        "plateau",
        "MNIST: baseline CNN 98.74 %, ML-ISTA 99.11 % (+0.37 points; mean test accuracy of the "
        "19 epochs before the last of 100); CIFAR-10: 79.00 % vs 82.93 % (+3.93 points; "
        "9 epochs before the last of 150) -- the printed outputs of the authors' notebooks "
        "MNIST/EvaluateModels.ipynb and CIFAR/EvaluateModels.ipynb in github.com/jsulam/ml-ista "
        "(commit b2d3972), one training run each, no seed spread",
        f"T = {n_unfold}: {tn_mean:.4f}, T = 0: {t0_mean:.4f} (mean of {len(unfolded)} "
        f"seeds); verdict: {unfolding.verdict}")]
    return StudyOutput(claims=claims, literature=literature,
                       figures=[_figure(pairs, unfolded, n_unfold, data_name),
                                _training_curves(pairs, unfolded, n_unfold)],
                       results={"budget": {**budget.__dict__, "unfold": budget.unfold.__dict__},
                                "budget_name": _budget_name(budget),
                                "check9_rule": rule_kind,
                                "n_train": pairs[0]["n_train"], "n_test": pairs[0]["n_test"],
                                "seeds": seeds, "ml_ista_seeds_needed": n_needed,
                                "complete_and_proper": pairs, "ml_ista": unfolded},
                       summary=summary)


STUDY = Study(name="paper1_models", paper=1, order=30,
              title="Trained sparse-coding CNNs: complete model, proper priors, "
                    "ML-ISTA (checks 9, 10, 23)", run=run, threads=1,
              # on a large dataset (Fashion-MNIST): quick ~130 s CPU (2000/1000 images); full:
              # 2 seeds x 3 networks x ~224 s (2 threads) + check 23's 3 seeds x ~94 s CPU
              cost=(14, 60), cost_large=(130, 2200))
