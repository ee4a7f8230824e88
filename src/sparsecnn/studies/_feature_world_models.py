"""Trained CNNs on a feature world for the robustness study (docs/theory.md B.3 architecture, A.8).

The architecture is the constructed network's (:func:`sparsecnn.features.construct`, the same
layers, shapes and dilations that :func:`sparsecnn.features.compare` re-initializes and trains):
conv k x k -> ReLU -> conv 1x1 (detector), max-pool -> dilated conv -> ReLU (AND level), global
max-pool -> linear (OR head).  Its weights are re-initialized from a seed (PyTorch defaults,
as :func:`compare` does) and trained by Adam on the cross-entropy ``-log p(y | Gamma_L(x))``
(A.7), optionally with proper priors (every hidden bias projected onto ``b <= 0``, A.8.1).

The network is exposed as ``features`` (one flat ``nn.Sequential``, so that
:func:`sparsecnn.nn.from_cnn` finds every Conv2d + ReLU pair) and ``head`` (the linear OR),
the interface of the study's digit CNN.  ``from_cnn`` converts the k x k detector convolution
(``E+(a) = 1/2||x - D a||^2 + lam^T a``, A.8.2); the dilated AND convolution has dilation != 1
and is kept as it is (listed in the expected :class:`UnmappedLayerWarning`).
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from ..features import FeatureWorld, construct
from ..nn import UnmappedLayerWarning, from_cnn
from ._seeding import seeded_global_rng

__all__ = ["FeatureWorldCNN", "feature_world_cnn", "swap_forward"]


class FeatureWorldCNN(nn.Module):
    """``x -> head(features(x))`` with the constructed network's layers (float32)."""

    def __init__(self, features: nn.Sequential, head: nn.Linear) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def feature_world_cnn(world: FeatureWorld, seed: int) -> FeatureWorldCNN:
    """The B.3 architecture of ``world`` with PyTorch's default initialization seeded by
    ``seed`` (every parameter trainable, float32)."""
    if not isinstance(world, FeatureWorld):
        raise TypeError(f"world must be a FeatureWorld; got {type(world).__name__}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int; got {type(seed).__name__}")
    template = construct(world, dtype=torch.float32)
    features = nn.Sequential(*copy.deepcopy(list(template.detector)),
                             *copy.deepcopy(list(template.hierarchy)))
    head = copy.deepcopy(template.classifier)
    model = FeatureWorldCNN(features, head)
    with seeded_global_rng(seed):
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return model.requires_grad_(True)


def swap_forward(model: nn.Module, n_iter: int) -> nn.Module:
    """``from_cnn(model, n_iter)`` (k-step non-negative ISTA on every convertible layer, A.8.2)
    with the expected warning about the kept layers (pooling, flatten, dilated convolution)
    silenced; any other warning still reaches the caller."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UnmappedLayerWarning)
        return from_cnn(model, n_iter=n_iter, method="ista").eval()
