"""Anomaly identification by the sparse-coding reading against the standard OOD baselines
(Bowren 2021, abstract; docs/theory.md A.1, A.3, A.6).

THE score of the claims, declared before running: the relative reconstruction error
``||x_c - D a*||^2 / ||x_c||^2`` of the exact non-negative lasso codes ``a*`` of the centred
image ``x_c = P(x) - m`` (``P``: check 27's average pooling of images larger than 16x16, the
identity on digits) on check 27's learned dictionary (true inference, learned without
labels on the in-distribution training images; :func:`sparsecnn.anomaly.inference_scores`).
Reported beside it: the energy under true inference, the CNN's one-shot per-layer scores, and
the baselines max-softmax, energy score ``-logsumexp`` and Mahalanobis on penultimate
features (:mod:`sparsecnn.anomaly`).

The OOD protocols take any :class:`~sparsecnn.data.DatasetSplit` with a held-out class:
the held-out class, feature-world images, uniform and Gaussian noise, inverted images, and
in-distribution test images under the five corruptions at severity 3 (cycled over images).
"""

from __future__ import annotations

from typing import Any

import torch

from ...anomaly import (
    anomaly_scores,
    detection_table,
    energy_scores,
    fit_mahalanobis,
    inference_scores,
    mahalanobis_scores,
    out_of_distribution_sets,
)
from ...data import DatasetSplit
from ...robustness import CORRUPTIONS, accuracy, corrupt
from ...training import small_cnn, train_classifier
from .check27 import CentredCoder

__all__ = ["BASELINES", "SCORE", "anomaly_experiment"]

SCORE = "sparse_coding.relative_reconstruction_error"
BASELINES = ("max_softmax", "energy_score", "mahalanobis")
CORRUPTION_SEVERITY = 3


def _corrupted(images: torch.Tensor, seed: int) -> torch.Tensor:
    """Each image under one corruption (cycled over :data:`CORRUPTIONS`) at severity 3."""
    out = images.clone()
    for index, name in enumerate(CORRUPTIONS):
        chosen = torch.arange(index, len(images), len(CORRUPTIONS))
        out[chosen] = corrupt(images[chosen], name, CORRUPTION_SEVERITY, seed=seed)
    return out


def anomaly_experiment(nine: DatasetSplit, held_images: torch.Tensor, coder: CentredCoder,
                       epochs: int, n_ood: int, seed: int) -> dict[str, Any]:
    """One seed: a CNN trained on ``nine`` (the in-distribution classes), every score on
    ``n_ood`` in-distribution test images and on each OOD set, and their detection table;
    the sparse-coding scores code ``coder.centred(x)`` (check 27's signal: the centred, and for
    large images pooled, image) on ``coder``'s dictionary at its ``lam``."""
    channels, height, width = nine.image_shape
    model = train_classifier(small_cnn(nine.n_classes, seed, (height, width), channels),
                             nine.train_images,
                             nine.train_labels, epochs=epochs, seed=seed)
    inside = nine.test_images[:n_ood]
    sets = out_of_distribution_sets(inside, n=n_ood, seed=seed, held_out=held_images)
    sets["corruptions"] = _corrupted(inside, seed)
    with torch.no_grad():
        means, precision = fit_mahalanobis(model.features(nine.train_images).flatten(1),
                                           nine.train_labels)

    def scores(images: torch.Tensor) -> dict[str, torch.Tensor]:
        values = {f"cnn.{k}": v for k, v in anomaly_scores(model, images).items()}
        values["max_softmax"] = values.pop("cnn.max_softmax")
        values["energy_score"] = energy_scores(model, images)
        with torch.no_grad():
            values["mahalanobis"] = mahalanobis_scores(model.features(images).flatten(1),
                                                       means, precision)
        values.update({f"sparse_coding.{k}": v for k, v in inference_scores(
            coder.dictionary, coder.lam, coder.centred(images)).items()})
        return values

    in_scores = scores(inside)
    out_scores = {name: scores(images) for name, images in sets.items()}
    relative = {name: float(values.median()) for name, values in in_scores.items()
                if name.endswith("relative_reconstruction_error")}
    return {"clean_accuracy": accuracy(model, nine.test_images, nine.test_labels),
            "score": SCORE, "in_distribution_median_relative_error": relative,
            "table": detection_table(in_scores, out_scores),
            "in_scores": {k: v.tolist() for k, v in in_scores.items()},
            "out_scores": {s: {k: v.tolist() for k, v in d.items()}
                           for s, d in out_scores.items()}}
