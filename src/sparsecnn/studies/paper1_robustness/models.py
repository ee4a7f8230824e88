"""The models of the robustness study: the small digits CNN (``training.small_cnn``, fitted by
``training.train_classifier``), its forward pass swapped for k-step sparse inference, and the
ReLU / LCA front ends on one learned dictionary (docs/theory.md check 27)."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from ...data import DatasetSplit
from ...nn import SparseLinear, UnmappedLayerWarning, from_cnn
from ...training import refit_head, small_cnn, train_classifier
from .._seeding import seeded_global_rng

__all__ = ["FrontEnd", "front_ends", "refit_head", "small_cnn", "swap", "train_classifier"]


def swap(model: nn.Module, n_iter: int) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnmappedLayerWarning)
        return from_cnn(model, n_iter=n_iter, method="ista").eval()


class FrontEnd(nn.Module):
    """``x -> head(code(x))`` with a :class:`SparseLinear` coding layer on the flattened image."""

    def __init__(self, coder: SparseLinear, n_classes: int, seed: int) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), coder)
        with seeded_global_rng(seed):
            self.head = nn.Linear(coder.out_features, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def front_ends(dictionary: torch.Tensor, lam: float, lca_steps: int, data: DatasetSplit,
                seed: int) -> dict[str, FrontEnd]:
    models = {}
    for name, n_iter in (("relu_front_end", 0), ("lca_front_end", lca_steps)):
        coder = SparseLinear(dictionary.shape[0], dictionary.shape[1], n_iter=n_iter,
                             method="lca")
        with torch.no_grad():
            coder.weight.copy_(dictionary.T.to(coder.weight.dtype))
            coder.bias.fill_(-lam)
        coder.requires_grad_(False)
        model = FrontEnd(coder, data.n_classes, seed)
        models[name] = refit_head(model, data.train_images, data.train_labels, steps=600,
                                  learning_rate=0.1)
    return models

