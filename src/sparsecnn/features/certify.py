"""Margins and a certified L-infinity noise radius for the constructed network.

docs/theory.md B.3 ([P2], certificate [reconstructed]).  Let eta = rho * ||K||_1 / (theta_hi -
theta_lo) with ||K||_1 = k^2: an L-inf perturbation rho of an image of the world moves every
detector score by at most k^2 rho, so a detector that read 1 reads >= 1 - eta and one that read 0
reads <= eta.  Every later layer is monotone (max-pool, AND with weights 1, ReLU, global max,
OR with weights 1), hence by induction over the levels a present object scores >= 1 - A eta (A
leaf features) and an absent one <= eta; the true class scores >= 1 - A eta and any other class
<= V eta (V variants).  The prediction cannot change while 1 - A eta > V eta, i.e. for every

    rho < radius = (theta_hi - theta_lo) / (k^2 (A + V)).

The radius is 0 when the world violates B.1 (no guarantee to start from).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .construct import ConstructedNetwork
from .samples import FeatureSample, GroundTruth
from .world import FeatureWorld

__all__ = ["CertificationResult", "certified_radius", "certify", "smallest_breaking_perturbation",
           "worst_case_perturbation"]


@dataclass
class CertificationResult:
    """``margin`` (n,): true score minus best other score; ``radius``: certified L-inf radius.

    ``scores`` (n, C), ``predictions`` and ``labels`` (n,), ``error_rate``; ``min_margin``.
    """

    margin: torch.Tensor
    radius: float
    scores: torch.Tensor
    predictions: torch.Tensor
    labels: torch.Tensor
    error_rate: float
    min_margin: float
    well_posed: bool

    def to_dict(self) -> dict[str, float | bool | int]:
        return {"n_images": len(self.labels), "error_rate": self.error_rate,
                "min_margin": self.min_margin, "mean_margin": float(self.margin.mean()),
                "radius": self.radius, "well_posed": self.well_posed}


def certified_radius(network: ConstructedNetwork) -> float:
    """(theta_hi - theta_lo) / (k^2 (A + V)); 0 when the network is not well posed."""
    if not network.well_posed:
        return 0.0
    return network.detector_gap / (network.detector_norm
                                   * (network.leaves_per_object + network.variants_per_class))


def _margins(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    true = scores.gather(1, labels[:, None])[:, 0]
    others = scores.scatter(1, labels[:, None], float("-inf"))
    return true - others.max(dim=1).values


def certify(network: ConstructedNetwork, world: FeatureWorld,
            images: torch.Tensor | FeatureSample | None = None,
            labels: torch.Tensor | None = None, *, n: int = 1000, seed: int = 0,
            batch_size: int = 4096) -> CertificationResult:
    """Margins of ``network`` on ``images`` (default: ``n`` images drawn with ``seed``) and the
    certified radius of the module docstring."""
    if not isinstance(network, ConstructedNetwork):
        raise TypeError(f"network must be a ConstructedNetwork (from construct); "
                        f"got {type(network).__name__}")
    if not isinstance(world, FeatureWorld):
        raise TypeError(f"world must be a FeatureWorld; got {type(world).__name__}")
    if images is None:
        images = world.sample(n, seed)
    if isinstance(images, FeatureSample):
        labels = images.labels if labels is None else labels
        images = images.images
    if labels is None:
        raise ValueError("labels must be given with an images tensor (or pass a FeatureSample)")
    labels = torch.as_tensor(labels, dtype=torch.int64)
    if images.ndim != 4 or len(images) != len(labels):
        raise ValueError(f"images must have shape (n, 1, H, W) with n = len(labels) = "
                         f"{len(labels)}; got {tuple(images.shape)}")
    with torch.no_grad():
        scores = torch.cat([network(images[i:i + batch_size]).cpu()
                            for i in range(0, len(images), batch_size)]) if len(images) else \
            torch.zeros((0, world.n_classes), dtype=network.dtype)
    margin = _margins(scores, labels)
    predictions = scores.argmax(1)
    error = float((predictions != labels).float().mean()) if len(labels) else 0.0
    return CertificationResult(margin=margin, radius=certified_radius(network), scores=scores,
                               predictions=predictions, labels=labels, error_rate=error,
                               min_margin=float(margin.min()) if len(margin) else float("nan"),
                               well_posed=network.well_posed)


def worst_case_perturbation(world: FeatureWorld, images: torch.Tensor, truth: GroundTruth,
                            rho: float) -> torch.Tensor:
    """A sign perturbation of L-inf size ``rho`` aimed at the true object's features.

    Binary templates: -rho (2F_j - 1) on every object feature's window, which lowers its
    detector score s_j by exactly k^2 rho; real-valued templates: rho sign(I - F_j) (rho sign(1/2 -
    F_j) where I = F_j), which raises the L1 distance d_j.  Zero elsewhere.
    """
    k = world.feature_size
    perturbation = torch.zeros(images.shape, dtype=torch.float64)
    templates = torch.tensor(world.templates, dtype=torch.float64)
    binary = bool(np.all((world.templates == 0) | (world.templates == 1)))
    ids, positions = truth.feature_ids, truth.feature_positions
    rows = torch.arange(k)[:, None]
    cols = torch.arange(k)[None, :]
    for slot in range(ids.shape[1]):
        index = torch.from_numpy(np.flatnonzero((ids[:, slot] >= 0)
                                                & ~truth.is_distractor[:, slot]))
        if len(index) == 0:
            continue
        chosen = templates[torch.from_numpy(ids[index.numpy(), slot])]
        y = torch.from_numpy(positions[index.numpy(), slot, 0])[:, None, None] + rows
        x = torch.from_numpy(positions[index.numpy(), slot, 1])[:, None, None] + cols
        where = (index[:, None, None], 0, y, x)
        if binary:
            direction = -(2 * chosen - 1)
        else:
            window = images.to(torch.float64)[where]
            direction = torch.sign(window - chosen)
            direction = torch.where(direction == 0, torch.sign(0.5 - chosen), direction)
        perturbation[where] = rho * direction
    return perturbation


def smallest_breaking_perturbation(network: ConstructedNetwork, world: FeatureWorld,
                                   sample: FeatureSample, *, iterations: int = 20) -> float:
    """Smallest rho (to bisection accuracy) at which :func:`worst_case_perturbation` drives some
    image's margin to <= 0: an upper bound on the true robust radius, to set beside the
    certified lower bound ``radius``."""
    images = sample.images.to(torch.float64)

    def broken(rho: float) -> bool:
        delta = worst_case_perturbation(world, sample.images, sample.truth, rho)
        result = certify(network, world, images + delta, sample.labels)
        return bool((result.margin <= 0).any())

    low, high = 0.0, 1.0
    if not broken(high):
        return float("inf")
    for _ in range(iterations):
        middle = (low + high) / 2
        if broken(middle):
            high = middle
        else:
            low = middle
    return high
