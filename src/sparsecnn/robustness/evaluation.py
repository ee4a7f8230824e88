"""Accuracy of a classifier, clean, along the corruption ladder and under attack, and
:func:`evaluate_robustness` (every measurement at once, JSON-serialisable)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .._checks import check_batch, check_choice, check_positive_float, check_positive_int
from ._checks import Bounds, as_model_dtype, check_images, check_labels
from .attacks import ATTACKS, attack, minimal_l2_perturbation
from .corruptions import CORRUPTIONS, corrupt, corruption_parameter

__all__ = ["EPSILONS_L2", "EPSILONS_LINF", "accuracy", "attack_curve", "corruption_curves",
           "evaluate_robustness"]

#: attack radii (pixels in [0, 1]) of :func:`evaluate_robustness` and the robustness study:
#: L-infinity (FGSM, PGD L-inf) and L2 (PGD L2); 0 gives the clean accuracy.
EPSILONS_LINF = (0.0, 0.05, 0.1, 0.2)
EPSILONS_L2 = (0.0, 0.5, 1.0, 2.0)

def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 1024) -> float:
    """Fraction of ``images`` whose ``argmax`` logit equals the label."""
    images = as_model_dtype(model, check_batch(images))
    labels = check_labels(labels, images.shape[0])
    batch_size = check_positive_int(batch_size, "batch_size")
    correct = 0
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            logits = model(images[start:start + batch_size])
            correct += int((logits.argmax(1) == labels[start:start + batch_size]).sum())
    return correct / max(images.shape[0], 1)


def corruption_curves(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                      corruptions: Sequence[str] = CORRUPTIONS, seed: int = 0,
                      bounds: Bounds = (0.0, 1.0)) -> dict[str, list[float]]:
    """Accuracy at severities 0..5 for each corruption (index = severity)."""
    images = check_images(images)
    for name in corruptions:
        check_choice(name, "corruption", CORRUPTIONS)
    clean = accuracy(model, images, labels)
    return {name: [clean] + [accuracy(model, corrupt(images, name, severity, seed=seed,
                                                     bounds=bounds), labels)
                             for severity in range(1, 6)]
            for name in corruptions}


def attack_curve(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, name: str,
                 epsilons: Sequence[float], **options: Any) -> list[float]:
    """Accuracy under attack ``name`` at each radius in ``epsilons`` (0 gives the clean
    accuracy)."""
    check_choice(name, "attack", ATTACKS)
    if not len(epsilons):
        raise ValueError(f"epsilons must list at least one radius; got {list(epsilons)!r}")
    result = []
    for epsilon in epsilons:
        epsilon = check_positive_float(epsilon, "epsilon", allow_zero=True)
        adversarial = images if epsilon == 0 else attack(model, images, labels, name, epsilon,
                                                        **options)
        result.append(accuracy(model, adversarial, labels))
    return result


def evaluate_robustness(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                        epsilons_linf: Sequence[float] = EPSILONS_LINF,
                        epsilons_l2: Sequence[float] = EPSILONS_L2,
                        pgd_steps: int = 10, minimal_subset: int | None = 100,
                        minimal_tolerance: float = 0.01,
                        targets: torch.Tensor | None = None, seed: int = 0,
                        corruptions: Sequence[str] = CORRUPTIONS,
                        bounds: Bounds = (0.0, 1.0)) -> dict[str, Any]:
    """Everything at once: clean accuracy, corruption curves, FGSM / PGD-L-inf / PGD-L2
    curves and the median minimal L2 perturbation (on the first ``minimal_subset`` images,
    bisection to ``minimal_tolerance``; targeted when ``targets`` is given; ``None`` when more
    than half are not fooled within the search radius).  A JSON-serialisable dict."""
    was_training = model.training
    model.eval()
    try:
        result: dict[str, Any] = {"clean_accuracy": accuracy(model, images, labels)}
        result["corruptions"] = {
            "severity": list(range(6)),
            "parameters": {name: [corruption_parameter(name, s) for s in range(6)]
                           for name in corruptions},
            "accuracy": corruption_curves(model, images, labels, corruptions=corruptions,
                                          seed=seed, bounds=bounds)}
        options = {"steps": pgd_steps, "bounds": bounds}
        result["attacks"] = {
            "fgsm": {"epsilons": list(epsilons_linf), "accuracy": attack_curve(
                model, images, labels, "fgsm", epsilons_linf, bounds=bounds)},
            "pgd_linf": {"epsilons": list(epsilons_linf), "accuracy": attack_curve(
                model, images, labels, "pgd_linf", epsilons_linf, **options)},
            "pgd_l2": {"epsilons": list(epsilons_l2), "accuracy": attack_curve(
                model, images, labels, "pgd_l2", epsilons_l2, **options)},
        }
        if minimal_subset:
            count = min(int(minimal_subset), images.shape[0])
            sub_targets = None if targets is None else targets[:count]
            minimal = minimal_l2_perturbation(model, images[:count], labels[:count],
                                              targets=sub_targets, steps=pgd_steps,
                                              tolerance=minimal_tolerance, bounds=bounds)
            finite = minimal.distance[torch.isfinite(minimal.distance)]
            result["minimal_l2"] = {
                "median": minimal.median if math.isfinite(minimal.median) else None,
                "success_rate": minimal.success_rate, "n_images": count,
                "targeted": targets is not None,
                "mean_of_found": float(finite.mean()) if finite.numel() else None}
    finally:
        model.train(was_training)
    return result
