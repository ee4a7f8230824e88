"""The classifiers a run trains: :class:`ConvClassifier`, the registry :data:`MODELS` that
:class:`~sparsecnn.training.TrainingConfig` names, and :func:`small_cnn`."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .config import DTYPES, TrainingConfig

__all__ = ["MODELS", "ConvClassifier", "ModelBuilder", "build_model", "hidden_bias_parameters",
           "register_model", "small_cnn"]


class ConvClassifier(nn.Module):
    """Layered thresholding + logistic regression (docs/theory.md A.6-A.7): hidden layers
    ``Gamma_l = ReLU(conv(Gamma_{l-1}, W_l) + b_l)`` (3x3, padding 1, no normalisation, no
    pooling), then ``softmax(W Gamma_L + c0)``; ``forward`` returns the logits."""

    def __init__(self, in_channels: int, image_size: tuple[int, int], channels: tuple[int, ...],
                 strides: tuple[int, ...], n_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        height, width = image_size
        previous = in_channels
        for out_channels, stride in zip(channels, strides, strict=True):
            layers += [nn.Conv2d(previous, out_channels, 3, stride=stride, padding=1), nn.ReLU()]
            height = (height + 2 - 3) // stride + 1
            width = (width + 2 - 3) // stride + 1
            previous = out_channels
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(previous * height * width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


ModelBuilder = Callable[[TrainingConfig, tuple[int, ...], int], nn.Module]


def _build_cnn(config: TrainingConfig, image_shape: tuple[int, ...], n_classes: int
               ) -> nn.Module:
    return ConvClassifier(image_shape[0], (image_shape[1], image_shape[2]), config.channels,
                          config.strides, n_classes)


def _build_sparse(config: TrainingConfig, image_shape: tuple[int, ...], n_classes: int
                  ) -> nn.Module:
    from ..nn import HierarchicalSparseCoding, SparseCodingClassifier

    features = HierarchicalSparseCoding.convolutional(
        (image_shape[0], *config.channels), kernel_size=3, stride=list(config.strides),
        padding=1, n_iter=config.n_iter, method=config.method, nonneg=True,
        proper_prior=config.proper_prior)
    return SparseCodingClassifier(features, n_classes, tuple(image_shape))


def _build_ml_ista(config: TrainingConfig, image_shape: tuple[int, ...], n_classes: int
                   ) -> nn.Module:
    from ..nn import HierarchicalSparseCoding, SparseCodingClassifier

    layers = HierarchicalSparseCoding.convolutional(
        (image_shape[0], *config.channels), kernel_size=3, stride=list(config.strides),
        padding=1, n_iter=0, nonneg=True, proper_prior=config.proper_prior)
    features = HierarchicalSparseCoding(*layers, inference="ml_ista", n_unfold=config.n_iter)
    return SparseCodingClassifier(features, n_classes, tuple(image_shape))


MODELS: dict[str, ModelBuilder] = {"cnn": _build_cnn, "sparse": _build_sparse,
                                   "ml_ista": _build_ml_ista}


def register_model(name: str, builder: ModelBuilder) -> None:
    """Make ``builder(config, image_shape, n_classes) -> nn.Module`` available as ``model=name``
    (the module must return logits and name its classifier layer ``head``)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string; got {name!r}")
    if not callable(builder):
        raise TypeError(f"builder must be callable; got {type(builder).__name__}")
    MODELS[name] = builder


def build_model(config: TrainingConfig, image_shape: tuple[int, ...], n_classes: int
                ) -> nn.Module:
    """The model of ``config``, initialised from ``torch.manual_seed(config.seed)`` without
    touching the caller's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = MODELS[config.model](config, tuple(image_shape), n_classes)
    return model.to(DTYPES[config.dtype])


def small_cnn(n_classes: int, seed: int, image_size: tuple[int, int] = (8, 8),
              in_channels: int = 1) -> ConvClassifier:
    """The robustness experiments' CNN: conv 3x3 (8 channels) -> conv 3x3 stride 2 (16) ->
    linear head, on ``in_channels`` x ``image_size`` images (8x8 digits by default),
    initialised from ``seed``."""
    if (not isinstance(image_size, tuple) or len(image_size) != 2
            or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0
                       for n in image_size)):
        raise ValueError(f"image_size must be a (height, width) tuple of positive ints; got "
                         f"{image_size!r}")
    if not isinstance(in_channels, int) or isinstance(in_channels, bool) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive int; got {in_channels!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ConvClassifier(in_channels, image_size, (8, 16), (1, 2), n_classes)


def hidden_bias_parameters(model: nn.Module) -> list[torch.Tensor]:
    """Biases of the hidden (sparse-coding) layers: every ``bias`` outside ``model.head``."""
    head = getattr(model, "head", None)
    excluded = {id(p) for p in head.parameters()} if isinstance(head, nn.Module) else set()
    return [p for name, p in model.named_parameters()
            if name.endswith("bias") and id(p) not in excluded]
