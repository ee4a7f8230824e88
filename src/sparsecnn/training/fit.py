"""The one seeded mini-batch loop that fits a classifier, and the recipes built on it.

Every step minimises the cross-entropy ``-log p(y | Gamma_L(x))`` of the logistic-regression
head over the dictionaries, biases (thresholds) and head (docs/theory.md A.7); ``proper_prior``
projects every hidden bias onto ``b <= 0`` after every step (docs/theory.md A.8.1), so every
prior stays proper.  :func:`train_step` is one update, :func:`fit_epoch` one pass over a given
data order (sharded across data-parallel ranks when asked), :func:`fit_classifier` the whole
seeded loop in memory; :func:`sparsecnn.training.train` runs :func:`fit_epoch` between its
checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .architecture import DEFAULT_ARCHITECTURE, build_from_architecture
from .models import hidden_bias_parameters

__all__ = ["FIT_OPTIMIZERS", "fit_classifier", "fit_epoch", "make_optimizer", "refit_head",
           "train_classifier", "train_default_model", "train_step"]

FIT_OPTIMIZERS = ("adam", "adamw", "sgd")


def make_optimizer(name: str, parameters: Iterable[torch.Tensor], *, learning_rate: float,
                   weight_decay: float = 0.0, momentum: float = 0.9) -> torch.optim.Optimizer:
    """``torch.optim.Adam``, ``AdamW`` or ``SGD`` (with ``momentum``) by ``name``."""
    if name == "adam":
        return torch.optim.Adam(parameters, lr=learning_rate, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=learning_rate, momentum=momentum,
                               weight_decay=weight_decay)
    raise ValueError(f"optimizer must be one of {FIT_OPTIMIZERS}; got {name!r}")


def project_biases(biases: Sequence[torch.Tensor]) -> None:
    """``b <- min(b, 0)`` in place: the projection onto proper priors (docs/theory.md A.8.1)."""
    with torch.no_grad():
        for bias in biases:
            bias.clamp_(max=0.0)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
               labels: torch.Tensor, *, loss_scale: float | None = None,
               project: Sequence[torch.Tensor] = ()) -> torch.Tensor:
    """One optimizer step on ``L = mean_i -log p(y_i | x_i)`` (``loss_scale=None``) or on
    ``L = loss_scale * sum_i -log p(y_i | x_i)``, then :func:`project_biases` on ``project``.
    Returns ``L`` (detached).

    The scaled sum is what data-parallel ranks need: with ``loss_scale = world_size / n`` for
    a global batch of ``n``, DDP's gradient average is the gradient of the global mean.
    """
    logits = model(images)
    if loss_scale is None:
        loss = F.cross_entropy(logits, labels)
    else:
        loss = F.cross_entropy(logits, labels, reduction="sum") * loss_scale
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    project_biases(project)
    return loss.detach()


def fit_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
              labels: torch.Tensor, order: torch.Tensor, *, batch_size: int,
              project: Sequence[torch.Tensor] = (), rank: int = 0, world_size: int = 1,
              sum_over_ranks: bool = False,
              on_step: Callable[[torch.Tensor, int], None] | None = None) -> None:
    """One pass over ``images[order]`` in global batches of ``batch_size``: rank ``rank`` of
    ``world_size`` takes its contiguous shard of every batch and calls :func:`train_step`.

    ``sum_over_ranks`` scales the summed loss by ``world_size / n`` (see :func:`train_step`);
    otherwise the loss is the shard's mean.  ``on_step(loss, n)`` is called after every step
    with the step's loss and the global batch size ``n``.
    """
    for start in range(0, order.shape[0], batch_size):
        batch = order[start:start + batch_size]
        local = batch.tensor_split(world_size)[rank]
        scale = world_size / batch.numel() if sum_over_ranks else None
        loss = train_step(model, optimizer, images[local], labels[local], loss_scale=scale,
                          project=project)
        if on_step is not None:
            on_step(loss, batch.numel())


def fit_classifier(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                   epochs: int, batch_size: int, learning_rate: float, seed: int,
                   optimizer: str = "adam", weight_decay: float = 0.0,
                   proper_prior: bool = False, progress: bool = False,
                   description: str = "train") -> nn.Module:
    """Minimise the mean cross-entropy (docs/theory.md A.7) for ``epochs`` passes over
    ``(images, labels)`` in mini-batches of ``batch_size``, each pass in the order
    ``torch.randperm`` draws from one generator seeded with ``seed``; ``proper_prior``
    projects every hidden bias onto ``b <= 0`` after every step (A.8.1).  The same seed gives
    the same weights bit for bit.  Returns ``model`` in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    step_rule = make_optimizer(optimizer, model.parameters(), learning_rate=learning_rate,
                               weight_decay=weight_decay)
    project = hidden_bias_parameters(model) if proper_prior else []
    passes: Iterable[Any] = range(epochs)
    if progress:
        from tqdm.auto import tqdm

        passes = tqdm(passes, desc=description, unit="epoch")
    model.train()
    for _ in passes:
        order = torch.randperm(images.shape[0], generator=generator)
        fit_epoch(model, step_rule, images, labels, order, batch_size=batch_size,
                  project=project)
    return model.eval()


def train_classifier(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                     epochs: int, seed: int, proper_prior: bool = False,
                     learning_rate: float = 1e-2, batch_size: int = 128) -> nn.Module:
    """Minimise the cross-entropy ``-log p(y | Gamma_L(x))`` (docs/theory.md A.7) with Adam on
    seeded minibatches; ``proper_prior`` projects every hidden bias onto ``b <= 0`` after every
    step (A.8.1).  Returns ``model`` in eval mode."""
    return fit_classifier(model, images, labels, epochs=epochs, batch_size=batch_size,
                          learning_rate=learning_rate, seed=seed, optimizer="adam",
                          proper_prior=proper_prior)


def refit_head(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
               steps: int = 100, learning_rate: float = 0.02) -> nn.Module:
    """Refit ``model.head`` (logistic regression, A.7) on the codes ``model.features(x)`` with
    the features frozen (full-batch Adam from the current head)."""
    with torch.no_grad():
        codes = model.features(images).flatten(1)
    head = model.head
    optimizer = make_optimizer("adam", head.parameters(), learning_rate=learning_rate)
    for _ in range(steps):
        train_step(head, optimizer, codes, labels)
    return model.eval()


def train_default_model(epochs: int, seed: int, progress: bool = True
                        ) -> tuple[nn.Sequential, dict[str, Any], float]:
    """Train :data:`~sparsecnn.training.DEFAULT_ARCHITECTURE` on the digits (AdamW, mean
    cross-entropy, batch 64, seeded); return the model, its architecture and the test
    accuracy."""
    from ..data import load_digits_split

    data = load_digits_split(seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_from_architecture(DEFAULT_ARCHITECTURE)
    # weight_decay=0.01 is torch's AdamW default, which this model has always been trained with.
    fit_classifier(model, data.train_images, data.train_labels, epochs=epochs, batch_size=64,
                   learning_rate=3e-3, seed=seed, optimizer="adamw", weight_decay=0.01,
                   progress=progress, description="train default CNN on digits")
    with torch.no_grad():
        accuracy = float((model(data.test_images).argmax(1) == data.test_labels).double().mean())
    return model, DEFAULT_ARCHITECTURE, accuracy
