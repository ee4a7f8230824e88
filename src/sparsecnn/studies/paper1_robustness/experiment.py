"""One seed of the robustness study (digits models, check 27's front ends, the feature world,
anomaly identification) and the aggregate over seeds."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ...data import DatasetSplit
from ...robustness import (
    CORRUPTIONS,
    attack_curve,
    corruption_curves,
)
from ...training import hidden_bias_parameters
from .._paper1_common import mean_sd
from .._seeding import seeded_generator
from .anomaly_protocol import anomaly_experiment
from .budget import (
    EPSILONS_L2,
    EPSILONS_LINF,
    WORLD_BATCH_SIZE,
    WORLD_LEARNING_RATE,
    Budget,
)
from .check27 import check27
from .kstep import dead_fraction, fine_tuned_swaps
from .models import cnn_for, train_classifier

__all__ = ["aggregate", "one_seed"]


def _evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, budget: Budget,
              seed: int) -> dict[str, Any]:
    curves = corruption_curves(model, images, labels, seed=seed)
    options = {"steps": budget.pgd_steps}
    mean_corrupted = float(np.mean([curves[name][1:] for name in CORRUPTIONS]))
    return {
        "clean_accuracy": curves[CORRUPTIONS[0]][0],
        "corruptions": curves,
        "mean_corruption_accuracy": mean_corrupted,
        "attacks": {
            "fgsm": attack_curve(model, images, labels, "fgsm", EPSILONS_LINF),
            "pgd_linf": attack_curve(model, images, labels, "pgd_linf", EPSILONS_LINF,
                                     **options),
            "pgd_l2": attack_curve(model, images, labels, "pgd_l2", EPSILONS_L2, **options),
        },
    }


def _nine_classes(data: DatasetSplit, held_out: int) -> tuple[DatasetSplit, torch.Tensor]:
    def keep(labels: torch.Tensor) -> torch.Tensor:
        return labels != held_out

    def remap(labels: torch.Tensor) -> torch.Tensor:
        return labels - (labels > held_out).long()

    train, test = keep(data.train_labels), keep(data.test_labels)
    split = DatasetSplit(f"{data.name}-without-{held_out}", data.train_images[train],
                         remap(data.train_labels[train]), data.test_images[test],
                         remap(data.test_labels[test]), data.n_classes - 1)
    return split, data.test_images[~test]


def _feature_world(seed: int, budget: Budget) -> dict[str, Any]:
    from ...features import certify, construct, preset, worst_case_perturbation

    world = preset("default", seed=seed)
    network = construct(world)
    sample = world.sample(budget.n_feature_world, seed=seed + 1)
    certificate = certify(network, world, sample)
    radius = certificate.radius
    images = sample.images.to(torch.float64)
    labels = sample.labels

    def correct(inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return network(inputs).argmax(1) == labels

    generator = seeded_generator(seed)
    signs = torch.randint(0, 2, images.shape, generator=generator).to(images.dtype) * 2 - 1
    multiples = (0.5, 1.0, 1.5, 2.0, 3.0, 5.0)
    structured, random_sign = [], []
    for multiple in multiples:
        rho = multiple * radius
        structured.append(float(correct(
            images + worst_case_perturbation(world, images, sample.truth, rho)).double().mean()))
        random_sign.append(float(correct(images + rho * signs).double().mean()))
    # smallest structured perturbation that flips each image: bisection on rho
    unit = worst_case_perturbation(world, images, sample.truth, 1.0)
    low = torch.zeros(len(labels), dtype=torch.float64)
    high = torch.full((len(labels),), 1.0, dtype=torch.float64)
    flipped = ~correct(images + high.view(-1, 1, 1, 1) * unit)
    for _ in range(24):
        middle = (low + high) / 2
        fooled = ~correct(images + middle.view(-1, 1, 1, 1) * unit)
        high = torch.where(fooled, middle, high)
        low = torch.where(fooled, low, middle)
    flip = high[flipped]
    return {"certified_radius": radius, "error_rate": certificate.error_rate,
            "min_margin": certificate.min_margin, "well_posed": certificate.well_posed,
            "multiples_of_radius": list(multiples),
            "accuracy_structured": structured, "accuracy_random_sign": random_sign,
            "structured_flip_radius_min": float(flip.min()) if flip.numel() else None,
            "structured_flip_radius_median": float(flip.median()) if flip.numel() else None,
            "fraction_flipped_at_rho_1": float(flipped.double().mean()),
            "n_images": len(labels)}


def _evaluate_world(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                    budget: Budget, seed: int, *, attack: bool = True) -> dict[str, Any]:
    """Corruption curves and, with ``attack``, the PGD L-inf curve (never for the constructed
    network: its input gradient is 0, PGD would not move the input)."""
    curves = corruption_curves(model, images, labels, seed=seed)
    out = {"clean_accuracy": curves[CORRUPTIONS[0]][0], "corruptions": curves,
           "mean_corruption_accuracy": float(np.mean([curves[name][1:]
                                                      for name in CORRUPTIONS]))}
    if attack:
        out["attacks"] = {"pgd_linf": attack_curve(model, images, labels, "pgd_linf",
                                                   EPSILONS_LINF, steps=budget.pgd_steps)}
    return out


def _feature_world_cnns(seed: int, budget: Budget) -> dict[str, Any]:
    """On the seed's ``"default"`` feature world: the B.3 architecture trained by Adam (plain
    and with proper priors), and the plain one with its forward pass swapped by
    ``from_cnn(n_iter=k)``, calibrated and fine-tuned (:mod:`.kstep`), each under corruptions
    and PGD L-inf."""
    from ...features import construct, preset
    from .._feature_world_models import feature_world_cnn

    world = preset("default", seed=seed)
    train = world.sample(budget.world_train, seed=seed + 2)
    test = world.sample(budget.world_eval, seed=seed + 3)
    models: dict[str, Any] = {}
    plain = train_classifier(feature_world_cnn(world, seed), train.images, train.labels,
                             epochs=budget.world_epochs, seed=seed, batch_size=WORLD_BATCH_SIZE,
                             learning_rate=WORLD_LEARNING_RATE)
    models["cnn_k0"] = _evaluate_world(plain, test.images, test.labels, budget, seed)
    models["cnn_k0"]["dead_fraction"] = dead_fraction(plain, test.images)
    models.update(fine_tuned_swaps(
        plain, train.images, train.labels, test.images, test.labels, budget, seed,
        lambda model: _evaluate_world(model, test.images, test.labels, budget, seed),
        world=True))
    proper = train_classifier(feature_world_cnn(world, seed), train.images, train.labels,
                              epochs=budget.world_epochs, seed=seed, batch_size=WORLD_BATCH_SIZE,
                              learning_rate=WORLD_LEARNING_RATE, proper_prior=True)
    evaluation = _evaluate_world(proper, test.images, test.labels, budget, seed)
    evaluation["max_hidden_bias"] = max(float(b.detach().max())
                                        for b in hidden_bias_parameters(proper))
    models["cnn_proper_prior"] = evaluation
    models["constructed"] = _evaluate_world(construct(world), test.images, test.labels,
                                            budget, seed, attack=False)
    return models


def one_seed(seed: int, budget: Budget, progress: Callable[..., Any],
             data: DatasetSplit) -> dict[str, Any]:
    """One seed (the package docstring) on ``data``, the seed's split of the study's dataset
    (digits: scikit-learn's digits split by ``seed``)."""
    images, labels = data.test_images[:budget.n_eval], data.test_labels[:budget.n_eval]
    held_out = data.n_classes - 1 - seed % data.n_classes
    nine, held_images = _nine_classes(data, held_out)
    result: dict[str, Any] = {"seed": seed, "held_out_class": held_out, "models": {}}
    steps = progress(["train", "swap", "proper", "front", "world", "world_cnn", "anomaly"],
                     desc=f"robustness seed {seed}", leave=False)
    for step in steps:
        if step == "train":
            plain = train_classifier(cnn_for(data, seed), data.train_images,
                                     data.train_labels, epochs=budget.epochs, seed=seed)
        elif step == "swap":
            result["models"]["cnn_k0"] = _evaluate(plain, images, labels, budget, seed)
            result["models"].update(fine_tuned_swaps(
                plain, data.train_images, data.train_labels, images, labels, budget, seed,
                lambda model: _evaluate(model, images, labels, budget, seed)))
        elif step == "proper":
            proper = train_classifier(cnn_for(data, seed), data.train_images,
                                      data.train_labels, epochs=budget.epochs, seed=seed,
                                      proper_prior=True)
            evaluation = _evaluate(proper, images, labels, budget, seed)
            evaluation["max_hidden_bias"] = max(float(b.detach().max())
                                                for b in hidden_bias_parameters(proper))
            result["models"]["cnn_proper_prior"] = evaluation
        elif step == "front":
            result["front_end"], fronts = check27(nine, data, images, labels,
                                                  budget.check27_images, seed)
            for name, model in fronts.items():
                result["models"][name] = _evaluate(model, images, labels, budget, seed)
        elif step == "world":
            result["feature_world"] = _feature_world(seed, budget)
        elif step == "world_cnn":
            result["feature_world"]["models"] = _feature_world_cnns(seed, budget)
        else:
            coder = fronts["lca_front_end"].features
            result["anomaly"] = anomaly_experiment(nine, held_images, coder, budget.epochs,
                                                   budget.n_ood, seed)
    return result


# -- over seeds --------------------------------------------------------------------------------

def _curve_stats(curves: Sequence[Sequence[float]]) -> dict[str, list[float]]:
    array = np.asarray(curves, dtype=np.float64)
    sd = array.std(axis=0, ddof=1) if len(array) > 1 else np.zeros(array.shape[1])
    return {"mean": array.mean(axis=0).tolist(), "sd": sd.tolist()}


def aggregate(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    world_models = seeds[0]["feature_world"]["models"]
    world = {"corruption_curves": {m: {c: _curve_stats(
                [s["feature_world"]["models"][m]["corruptions"][c] for s in seeds])
                for c in CORRUPTIONS} for m in world_models},
             "pgd_linf_curves": {m: _curve_stats(
                 [s["feature_world"]["models"][m]["attacks"]["pgd_linf"] for s in seeds])
                 for m in world_models if "attacks" in world_models[m]},
             "clean_accuracy": {m: mean_sd([s["feature_world"]["models"][m]["clean_accuracy"]
                                             for s in seeds]) for m in world_models},
             "certified_radius": mean_sd([s["feature_world"]["certified_radius"]
                                           for s in seeds])}
    models = list(seeds[0]["models"])
    corruption = {m: {c: _curve_stats([s["models"][m]["corruptions"][c] for s in seeds])
                      for c in CORRUPTIONS} for m in models}
    attacks = {m: {a: _curve_stats([s["models"][m]["attacks"][a] for s in seeds])
                   for a in ("fgsm", "pgd_linf", "pgd_l2")} for m in models}
    clean = {m: mean_sd([s["models"][m]["clean_accuracy"] for s in seeds]) for m in models}
    tables = [s["anomaly"]["table"] for s in seeds]
    anomaly = {o: {score: {metric: mean_sd([t[o][score][metric] for t in tables])
                           for metric in tables[0][o][score]}
                   for score in tables[0][o]} for o in tables[0]}
    return {"clean_accuracy": clean, "corruption_curves": corruption, "attack_curves": attacks,
            "anomaly_table": anomaly, "epsilons_linf": list(EPSILONS_LINF),
            "epsilons_l2": list(EPSILONS_L2), "feature_world": world}

