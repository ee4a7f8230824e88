"""What a draw from a feature world returns: images, labels and their full ground truth.

docs/theory.md B.1: every image holds one object of its class (its level-1 features at their
displaced positions, the level-2 nodes of three-level worlds) plus the distractors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["FeatureSample", "GroundTruth"]


@dataclass
class GroundTruth:
    """Ground truth of generated images (numpy arrays, one row per image).

    ``feature_ids[i, s]`` is the template id pasted in slot s of image i (-1: empty slot),
    ``feature_positions[i, s]`` its window position (y, x) (top-left pixel), ``is_distractor``
    marks the extra features; ``anchor`` is the object anchor u, ``object_index`` the object
    (variant) drawn, ``part_ids``/``part_anchors`` the level-2 nodes of three-level worlds.
    """

    labels: np.ndarray
    object_index: np.ndarray
    anchor: np.ndarray
    feature_ids: np.ndarray
    feature_positions: np.ndarray
    is_distractor: np.ndarray
    part_ids: np.ndarray
    part_anchors: np.ndarray

    FIELDS = ("labels", "object_index", "anchor", "feature_ids", "feature_positions",
              "is_distractor", "part_ids", "part_anchors")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: Any) -> GroundTruth:
        return GroundTruth(*(getattr(self, name)[index] for name in self.FIELDS))

    def image(self, index: int) -> dict[str, Any]:
        """The ground truth of one image as plain Python values."""
        ids = self.feature_ids[index]
        keep = ids >= 0
        features = [{"id": int(j), "position": [int(p[0]), int(p[1])], "distractor": bool(d)}
                    for j, p, d in zip(ids[keep], self.feature_positions[index][keep],
                                       self.is_distractor[index][keep], strict=True)]
        parts = [{"id": int(j), "anchor": [int(p[0]), int(p[1])]}
                 for j, p in zip(self.part_ids[index], self.part_anchors[index], strict=True)
                 if j >= 0]
        return {"label": int(self.labels[index]), "object": int(self.object_index[index]),
                "anchor": [int(a) for a in self.anchor[index]], "features": features,
                "parts": parts}

    def arrays(self) -> dict[str, np.ndarray]:
        """Every field by name, as contiguous arrays (for saving)."""
        return {name: np.ascontiguousarray(getattr(self, name)) for name in self.FIELDS}

    @classmethod
    def concatenate(cls, parts: Sequence[GroundTruth]) -> GroundTruth:
        """The ground truth of ``parts`` one after the other (e.g. shards of one draw)."""
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in cls.FIELDS))


@dataclass
class FeatureSample:
    """Images drawn from a :class:`FeatureWorld` with their labels and ground truth.

    ``images`` (n, 1, H, W) float32 in [0, 1], ``labels`` (n,) int64 (torch tensors),
    ``truth`` a :class:`GroundTruth`; ``clean`` the noise-free images when requested;
    ``n_rejected`` draws the reference matcher rejected (over the blocks generated), by reason.
    """

    images: torch.Tensor
    labels: torch.Tensor
    truth: GroundTruth
    n_rejected: int
    rejections: dict[str, int]
    start: int
    stop: int
    clean: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: slice) -> FeatureSample:
        """The images ``index`` (a slice) with their labels and ground truth."""
        if not isinstance(index, slice):
            raise TypeError(f"index must be a slice; got {type(index).__name__}")
        start, stop, _ = index.indices(len(self))
        return FeatureSample(images=self.images[index], labels=self.labels[index],
                             truth=self.truth[index], n_rejected=self.n_rejected,
                             rejections=self.rejections, start=self.start + start,
                             stop=self.start + max(stop, start),
                             clean=None if self.clean is None else self.clean[index])
