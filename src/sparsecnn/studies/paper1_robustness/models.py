"""The models of the robustness study: the small digits CNN (``training.small_cnn``, fitted by
``training.train_classifier``), its forward pass swapped for k-step sparse inference; check 27's
front ends are in :mod:`.check27`."""

from __future__ import annotations

import warnings

from torch import nn

from ...data import DatasetSplit
from ...nn import UnmappedLayerWarning, from_cnn
from ...training import refit_head, small_cnn, train_classifier

__all__ = ["cnn_for", "refit_head", "small_cnn", "swap", "train_classifier"]


def cnn_for(data: DatasetSplit, seed: int) -> nn.Module:
    """The study's small CNN for ``data``'s image shape and classes, initialised from
    ``seed``."""
    channels, height, width = data.image_shape
    return small_cnn(data.n_classes, seed, (height, width), channels)


def swap(model: nn.Module, n_iter: int) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnmappedLayerWarning)
        return from_cnn(model, n_iter=n_iter, method="ista").eval()
