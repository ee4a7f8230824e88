"""Feature-world dataset directories as training data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sparsecnn.data import load_dataset


def test_feature_world_dataset_directory(tmp_path: Path) -> None:
    from sparsecnn.features import preset, save_dataset

    world = preset("default", image_size=14, n_classes=2, n_features=3,
                   features_per_object=2, distractors=0)
    sample = world.sample(24, seed=0)
    save_dataset(tmp_path / "world", sample, world, seed=0)
    split = load_dataset(str(tmp_path / "world"), seed=1)
    assert split.n_classes == 2
    assert split.train_images.shape == (12, 1, 14, 14)
    together = torch.cat([split.train_labels, split.test_labels]).sort().values
    assert torch.equal(together, sample.labels.sort().values)
    with pytest.raises(ValueError, match=r"is not a feature-world dataset: .*manifest\.json not "
                                         r"found"):
        load_dataset(str(tmp_path))
    from sparsecnn.training import TrainingConfig, train

    result = train(TrainingConfig(dataset=str(tmp_path / "world"), epochs=1, channels=(4,),
                                  strides=(2,)), None, progress=False)
    assert result.model.head.out_features == 2
