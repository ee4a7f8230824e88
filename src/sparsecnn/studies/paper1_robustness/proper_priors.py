"""The proper-prior corruption claims, powered (docs/theory.md A.8.1).

Per seed ``d = drop(plain) - drop(proper priors)``, the drop being clean accuracy minus the mean
accuracy over 5 corruptions x 5 severities, on digits (the study's small CNN) and on the
feature world (the B.3 architecture).  Declared before running:

* smallest effect of interest :data:`SMALLEST_EFFECT` = 1 accuracy point of mean corruption
  drop; two-sided paired t-test, alpha :data:`ALPHA`, power :data:`POWER`;
* internal pilot (Wittes & Brittain 1990: only its sd is used, never its mean): the study's own
  seeds, at least 2; the seeds the claim runs are
  :func:`~.._paper1_common.seeds_for_power` of the pilot's sd (floored at one test image),
  capped by :attr:`.budget.Budget.proper_max_seeds` (digits) and
  :attr:`.budget.Budget.world_proper_max_seeds` (feature world): the time budget;
* the seeds beyond the study's own train and evaluate only the two models the claim compares
  (:func:`proper_prior_seed`), with the recipe of :func:`.experiment.one_seed`;
* reported: the seeds needed and run, the power at the smallest effect with the seeds run and
  the minimal detectable effect (power :data:`POWER`) with them.  When the verdict rule leaves
  the claim inconclusive and the cap is below the need, the reason says what the seeds run can
  detect and what the effect is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy import optimize

from ...data import DatasetSplit
from ...robustness import CORRUPTIONS, corruption_curves
from .._paper1_common import mean_sd, paired_t_power, seeds_for_power
from .budget import WORLD_BATCH_SIZE, WORLD_LEARNING_RATE, Budget
from .models import cnn_for, train_classifier

__all__ = ["ALPHA", "POWER", "SMALLEST_EFFECT", "minimal_detectable_effect", "power_summary",
           "powered_seeds", "proper_prior_seed", "seeds_to_run"]

SMALLEST_EFFECT = 0.01  # 1 accuracy point of mean corruption drop
ALPHA = 0.05
POWER = 0.8


def _drops(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, seed: int
           ) -> dict[str, float]:
    curves = corruption_curves(model, images, labels, seed=seed)
    return {"clean_accuracy": curves[CORRUPTIONS[0]][0],
            "mean_corruption_accuracy": float(np.mean([curves[c][1:] for c in CORRUPTIONS]))}


def proper_prior_seed(seed: int, budget: Budget, data: DatasetSplit | None) -> dict[str, Any]:
    """Clean and mean corruption accuracy of the plain and the proper-prior CNN of ``seed``
    on ``data`` (the seed's split of the study's dataset; ``None``: the seed's feature world),
    trained and evaluated as :func:`.experiment.one_seed` does:
    ``{"cnn_k0": {...}, "cnn_proper_prior": {...}}``."""
    if data is None:
        from ...features import preset
        from .._feature_world_models import feature_world_cnn

        feature_world = preset("default", seed=seed)
        train = feature_world.sample(budget.world_train, seed=seed + 2)
        test = feature_world.sample(budget.world_eval, seed=seed + 3)
        out = {}
        for name, proper in (("cnn_k0", False), ("cnn_proper_prior", True)):
            model = train_classifier(feature_world_cnn(feature_world, seed), train.images,
                                     train.labels, epochs=budget.world_epochs, seed=seed,
                                     batch_size=WORLD_BATCH_SIZE,
                                     learning_rate=WORLD_LEARNING_RATE, proper_prior=proper)
            out[name] = _drops(model, test.images, test.labels, seed)
        return out
    images, labels = data.test_images[:budget.n_eval], data.test_labels[:budget.n_eval]
    out = {}
    for name, proper in (("cnn_k0", False), ("cnn_proper_prior", True)):
        model = train_classifier(cnn_for(data, seed), data.train_images, data.train_labels,
                                 epochs=budget.epochs, seed=seed, proper_prior=proper)
        out[name] = _drops(model, images, labels, seed)
    return out


def difference(models: dict[str, Any]) -> float:
    """``d = drop(plain) - drop(proper priors)`` of one seed's models."""
    def drop(name: str) -> float:
        return models[name]["clean_accuracy"] - models[name]["mean_corruption_accuracy"]
    return drop("cnn_k0") - drop("cnn_proper_prior")


def _pilot_sd(pilot: list[float], n_test: int) -> float:
    # accuracies are multiples of one test image: a pilot whose d coincide says nothing smaller
    return max(mean_sd(pilot)["sd"], 1.0 / n_test)


def seeds_to_run(pilot: list[float], n_test: int, cap: int) -> tuple[int, int]:
    """``(needed, run)``: :func:`seeds_for_power` of the pilot's sd at :data:`SMALLEST_EFFECT`,
    and ``min(needed, cap)`` but never fewer than the pilot."""
    if len(pilot) < 2:
        raise ValueError(f"pilot must hold >= 2 differences (an sd); got {len(pilot)}")
    needed = seeds_for_power(_pilot_sd(pilot, n_test), SMALLEST_EFFECT, alpha=ALPHA,
                             power=POWER)
    return needed, max(len(pilot), min(needed, cap))


def minimal_detectable_effect(n: int, sd: float) -> float:
    """The effect ``e`` at which the two-sided paired t-test with ``n`` seeds and spread
    ``sd`` has power :data:`POWER` (:func:`paired_t_power` is increasing in ``e``)."""
    def gap(effect: float) -> float:
        return paired_t_power(n, sd, effect, alpha=ALPHA) - POWER

    high = sd
    while gap(high) < 0:
        high *= 2
    return float(optimize.brentq(gap, high / 2 ** 40, high, xtol=1e-12))


def power_summary(differences: list[float], pilot_n: int, n_test: int, needed: int, cap: int
                  ) -> dict[str, Any]:
    """Seeds needed and run, the power at :data:`SMALLEST_EFFECT` and the minimal detectable
    effect with the seeds run (sd of every seed run, floored at one test image)."""
    n, sd = len(differences), _pilot_sd(differences, n_test)
    return {"smallest_effect_of_interest": SMALLEST_EFFECT, "pilot_seeds": pilot_n,
            "seeds_needed": needed, "seeds_cap": cap, "seeds_run": n,
            "power_at_smallest_effect": paired_t_power(n, sd, SMALLEST_EFFECT, alpha=ALPHA),
            "minimal_detectable_effect": minimal_detectable_effect(n, sd)}


def powered_seeds(own: list[dict[str, Any]], next_seed: int, cap: int, n_test: int,
                  run_seed: Callable[[int], dict[str, Any]]
                  ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The per-seed models of the claim: the study's own (``own``, the pilot) and, from
    ``next_seed`` on, ``run_seed(seed)`` (:func:`proper_prior_seed`) until the pilot has 2
    seeds and then until :func:`seeds_to_run` is reached, never beyond ``cap``; with the
    :func:`power_summary` (``{}`` with fewer than 2 seeds in all: no spread)."""
    models = list(own)
    seed = next_seed
    while len(models) < min(2, cap):
        models.append(run_seed(seed))
        seed += 1
    if len(models) < 2:
        return models, {}
    pilot = [difference(m) for m in models]
    needed, run = seeds_to_run(pilot, n_test, cap)
    while len(models) < run:
        models.append(run_seed(seed))
        seed += 1
    return models, power_summary([difference(m) for m in models], len(pilot), n_test,
                                 needed, cap)
