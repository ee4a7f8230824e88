"""Feature-world dataset files: safetensors arrays plus a JSON manifest with sha256 hashes.

A dataset directory holds

* ``images.safetensors``: ``images`` (n, 1, H, W) float32 and ``labels`` (n,) int64;
* ``truth.safetensors``: the :class:`GroundTruth` arrays (feature ids and positions, ...);
* ``manifest.json``: format version, the world's full configuration (templates and hierarchy,
  so the world is rebuilt exactly), sampling seed and shard, counts, rejections, and for every
  file its sha256 and size; also every array's shape and dtype.

:func:`load_dataset` verifies the hashes and shapes before returning anything.  Files are
written atomically into a directory that replaces the target only when complete.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load as load_arrays
from safetensors.numpy import save as save_arrays

from ..io import atomic_directory, to_json, write_bytes, write_text
from .samples import FeatureSample, GroundTruth
from .world import FeatureWorld

__all__ = ["FORMAT", "Dataset", "load_dataset", "save_dataset"]

FORMAT = "sparsecnn-feature-world/1"
FILES = ("images.safetensors", "truth.safetensors")


@dataclass
class Dataset:
    """A loaded dataset: the sample, the world that generated it and the manifest."""

    sample: FeatureSample
    world: FeatureWorld
    manifest: dict[str, Any]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_dataset(directory: str | Path, sample: FeatureSample, world: FeatureWorld, *,
                 seed: int, n_total: int | None = None, shard: int | None = None,
                 n_shards: int | None = None, overwrite: bool = False) -> Path:
    """Write ``sample`` (drawn from ``world`` with ``seed``) to ``directory``."""
    if not isinstance(sample, FeatureSample):
        raise TypeError(f"sample must be a FeatureSample; got {type(sample).__name__}")
    arrays = {"images.safetensors": {"images": sample.images.numpy(),
                                     "labels": sample.labels.numpy()},
              "truth.safetensors": sample.truth.arrays()}
    payloads = {name: save_arrays({k: np.ascontiguousarray(v) for k, v in content.items()})
                for name, content in arrays.items()}
    manifest = {
        "format": FORMAT,
        "world": world.config(),
        "seed": int(seed),
        "n_total": int(len(sample) if n_total is None else n_total),
        "shard": shard, "n_shards": n_shards,
        "start": sample.start, "stop": sample.stop,
        "n_images": len(sample),
        "class_counts": np.bincount(sample.labels.numpy(), minlength=world.n_classes).tolist(),
        "n_rejected": sample.n_rejected,
        "rejections": sample.rejections,
        "assumptions": world.assumptions,
        "arrays": {name: {key: {"shape": list(value.shape), "dtype": str(value.dtype)}
                          for key, value in content.items()}
                   for name, content in arrays.items()},
        "files": {name: {"sha256": _sha256(data), "bytes": len(data)}
                  for name, data in payloads.items()},
    }
    target = Path(directory)
    with atomic_directory(target, overwrite=overwrite) as staging:
        for name, data in payloads.items():
            write_bytes(staging / name, data)
        write_text(staging / "manifest.json", to_json(manifest) + "\n")
    return target


def load_dataset(directory: str | Path) -> Dataset:
    """Read a dataset written by :func:`save_dataset`, verifying hashes and shapes.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` when a hash, a shape or
    the format does not match the manifest.
    """
    root = Path(directory)
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path} not found: directory must hold a dataset "
                                f"written by `sparsecnn generate`")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"manifest format must be {FORMAT!r}; got {manifest.get('format')!r}")
    loaded: dict[str, dict[str, np.ndarray]] = {}
    for name in FILES:
        data = (root / name).read_bytes()
        expected = manifest["files"][name]["sha256"]
        actual = _sha256(data)
        if actual != expected:
            raise ValueError(f"{root / name} is corrupted: sha256 {actual} does not match the "
                             f"manifest's {expected}")
        arrays = load_arrays(data)
        for key, spec in manifest["arrays"][name].items():
            if key not in arrays:
                raise ValueError(f"{root / name} lacks array {key!r} listed in the manifest")
            if list(arrays[key].shape) != spec["shape"] or str(arrays[key].dtype) != spec["dtype"]:
                raise ValueError(f"{root / name}: array {key!r} has shape "
                                 f"{list(arrays[key].shape)} dtype {arrays[key].dtype}; the "
                                 f"manifest expects {spec['shape']} {spec['dtype']}")
        loaded[name] = arrays
    world = FeatureWorld.from_config(manifest["world"])
    images = loaded["images.safetensors"]["images"]
    if images.shape[1:] != (1, *world.image_size):
        raise ValueError(f"images have shape {images.shape}; the world needs (n, 1, "
                         f"{world.image_size[0]}, {world.image_size[1]})")
    truth = GroundTruth(*(loaded["truth.safetensors"][name] for name in GroundTruth.FIELDS))
    sample = FeatureSample(images=torch.from_numpy(images.copy()),
                           labels=torch.from_numpy(loaded["images.safetensors"]["labels"].copy()),
                           truth=truth, n_rejected=manifest["n_rejected"],
                           rejections=manifest["rejections"], start=manifest["start"],
                           stop=manifest["stop"])
    return Dataset(sample=sample, world=world, manifest=manifest)
