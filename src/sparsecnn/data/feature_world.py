"""A feature-world dataset directory (written by ``sparsecnn generate``, read and verified by
:func:`sparsecnn.features.load_dataset`) as a :class:`~sparsecnn.data.DatasetSplit`."""

from __future__ import annotations

from pathlib import Path

import torch

from .. import features
from .split import DatasetSplit, stratified_halves

__all__ = ["MANIFEST_NAME", "load_feature_world_split"]

MANIFEST_NAME = "manifest.json"


def load_feature_world_split(path: Path, seed: int = 0,
                             dtype: torch.dtype = torch.float32) -> DatasetSplit:
    """The sample of the dataset at ``path``, split 50/50 by :func:`stratified_halves`
    with ``random_state=seed`` (stratified when every class has two images).

    Raises ``FileNotFoundError`` when ``path`` holds no manifest (not a feature-world dataset).
    """
    loaded = features.load_dataset(path)
    images = loaded.sample.images.to(dtype)
    labels = loaded.sample.labels.to(torch.int64)
    train_idx, test_idx = stratified_halves(labels.numpy(), 0.5, seed)
    train_idx, test_idx = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    return DatasetSplit(name=path.name, train_images=images[train_idx],
                        train_labels=labels[train_idx], test_images=images[test_idx],
                        test_labels=labels[test_idx], n_classes=int(loaded.world.n_classes))
