"""The models of the robustness study and how they are fitted: the small digits CNN, its
forward pass swapped for k-step sparse inference, and the ReLU / LCA front ends on one learned
dictionary (THEORY.md check 27)."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ...data import DatasetSplit
from ...nn import SparseLinear, UnmappedLayerWarning, from_cnn
from ...training import ConvClassifier, hidden_bias_parameters
from .._seeding import seeded_global_rng

__all__ = ["FrontEnd", "front_ends", "refit_head", "small_cnn", "swap", "train_classifier"]


def train_classifier(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                     epochs: int, seed: int, proper_prior: bool = False,
                     learning_rate: float = 1e-2, batch_size: int = 128) -> nn.Module:
    """Minimise the cross-entropy ``-log p(y | Gamma_L(x))`` (THEORY.md A.7) with Adam on
    seeded minibatches; ``proper_prior`` projects every hidden bias onto ``b <= 0`` after every
    step (A.8.1).  Returns ``model`` in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    biases = hidden_bias_parameters(model) if proper_prior else []
    model.train()
    for _ in range(epochs):
        order = torch.randperm(images.shape[0], generator=generator)
        for start in range(0, images.shape[0], batch_size):
            index = order[start:start + batch_size]
            loss = F.cross_entropy(model(images[index]), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                for bias in biases:
                    bias.clamp_(max=0.0)
    return model.eval()


def refit_head(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
               steps: int = 100, learning_rate: float = 0.02) -> nn.Module:
    """Refit ``model.head`` (logistic regression, A.7) on the codes ``model.features(x)`` with
    the features frozen (full-batch Adam from the current head)."""
    with torch.no_grad():
        codes = model.features(images).flatten(1)
    head = model.head
    optimizer = torch.optim.Adam(head.parameters(), lr=learning_rate)
    for _ in range(steps):
        loss = F.cross_entropy(head(codes), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval()


def small_cnn(n_classes: int, seed: int) -> ConvClassifier:
    """The study's CNN: conv 3x3 (8 channels) -> conv 3x3 stride 2 (16) -> linear head, on
    8x8 digits, initialised from ``seed``."""
    with seeded_global_rng(seed):
        return ConvClassifier(1, (8, 8), (8, 16), (1, 2), n_classes)


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

