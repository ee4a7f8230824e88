"""Feature-world dataset files: safetensors parts plus a JSON manifest with sha256 hashes.

A dataset directory (format ``sparsecnn-feature-world/2``) holds

* ``images-NNNNNN.safetensors``: ``images`` (m, 1, H, W) float32 and ``labels`` (m,) int64 of
  one part (images [start, stop) of the draw);
* ``truth-NNNNNN.safetensors``: the :class:`GroundTruth` arrays of the same images;
* ``manifest.json``: format version, the world's full configuration (templates and hierarchy,
  so the world is rebuilt exactly), sampling seed and shard, counts, rejections, the parts in
  order with their ranges, for every file its sha256 and size, and every array's dtype and
  shape per image.

:func:`write_dataset` draws the images part by part and writes each part as soon as it is
drawn, so memory stays bounded by one part whatever the number of images; part boundaries
fall on the sampler's blocks (``BLOCK_SIZE``), so every block is drawn once and the images,
labels, truth and rejection counts are bit-identical whatever the part size.  The older
single-file layout (format ``/1``: ``images.safetensors`` + ``truth.safetensors``) is still
read.  :func:`iter_dataset` and :func:`load_dataset` verify hashes and shapes before returning
anything.  Files are written into a directory that replaces the target only when complete.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load as load_arrays
from safetensors.numpy import save as save_arrays

from ..io import atomic_directory, to_json, write_bytes, write_text
from .samples import FeatureSample, GroundTruth
from .sampling import BLOCK_SIZE, sample_range
from .world import FeatureWorld

__all__ = ["FORMAT", "Dataset", "image_bytes", "iter_dataset", "load_dataset", "part_size_for",
           "save_dataset", "write_dataset"]

FORMAT = "sparsecnn-feature-world/2"
FORMAT_V1 = "sparsecnn-feature-world/1"
FILES_V1 = ("images.safetensors", "truth.safetensors")
PART_BYTES = 64 * 2**20  # target size of one part: bounds the memory of writing and reading
_PART_NAME = re.compile(r"^(images|truth)-\d{6,}\.safetensors$")


@dataclass
class Dataset:
    """A loaded dataset: the sample, the world that generated it and the manifest."""

    sample: FeatureSample
    world: FeatureWorld
    manifest: dict[str, Any]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def image_bytes(world: FeatureWorld) -> int:
    """Bytes one image takes in the files: the float32 pixels, its label and its ground truth
    (safetensors headers aside)."""
    height, width = world.image_size
    n_slots = world._tables.leaf_ids.shape[1] + world.distractors
    n_part_slots = world._tables.part_ids.shape[1]
    # labels twice (images file and truth), object index, anchor (2), per slot id (8) +
    # position (16) + distractor flag (1), per level-2 node id (8) + anchor (16)
    return 4 * height * width + 8 + 8 + 8 + 16 + 25 * n_slots + 24 * n_part_slots


def part_size_for(world: FeatureWorld, part_bytes: int = PART_BYTES) -> int:
    """Images per part: whole sampler blocks, about ``part_bytes`` of files, at least one
    block."""
    return max(1, part_bytes // (image_bytes(world) * BLOCK_SIZE)) * BLOCK_SIZE


def _part_arrays(sample: FeatureSample) -> dict[str, dict[str, np.ndarray]]:
    return {"images": {"images": np.ascontiguousarray(sample.images.numpy()),
                       "labels": np.ascontiguousarray(sample.labels.numpy())},
            "truth": sample.truth.arrays()}


class _PartWriter:
    """Writes the parts of one dataset into ``staging`` and gathers the manifest entries."""

    def __init__(self, staging: Path, world: FeatureWorld) -> None:
        self.staging = staging
        self.world = world
        self.parts: list[dict[str, Any]] = []
        self.files: dict[str, dict[str, Any]] = {}
        self.arrays: dict[str, dict[str, Any]] = {}
        self.class_counts = np.zeros(world.n_classes, dtype=np.int64)

    def write(self, sample: FeatureSample) -> None:
        index = len(self.parts)
        names = {}
        for kind, content in _part_arrays(sample).items():
            name = f"{kind}-{index:06d}.safetensors"
            data = save_arrays(content)
            write_bytes(self.staging / name, data)
            self.files[name] = {"sha256": _sha256(data), "bytes": len(data)}
            names[kind] = name
            self.arrays[kind] = {key: {"row_shape": list(value.shape[1:]),
                                       "dtype": str(value.dtype)}
                                 for key, value in content.items()}
        self.class_counts += np.bincount(sample.labels.numpy(), minlength=self.world.n_classes)
        self.parts.append({"start": sample.start, "stop": sample.stop, "files": names})

    def manifest(self, *, seed: int, n_total: int, shard: int | None, n_shards: int | None,
                 start: int, stop: int, n_rejected: int, rejections: dict[str, int]
                 ) -> dict[str, Any]:
        return {"format": FORMAT, "world": self.world.config(), "seed": int(seed),
                "n_total": int(n_total), "shard": shard, "n_shards": n_shards,
                "start": start, "stop": stop, "n_images": stop - start,
                "class_counts": self.class_counts.tolist(), "n_rejected": int(n_rejected),
                "rejections": rejections, "assumptions": self.world.assumptions,
                "parts": self.parts, "arrays": self.arrays, "files": self.files}


def _shard_range(n_total: int, shard: int | None, n_shards: int | None) -> tuple[int, int]:
    if (shard is None) != (n_shards is None):
        raise ValueError(f"shard and n_shards must be given together; got shard={shard!r}, "
                         f"n_shards={n_shards!r}")
    if shard is None or n_shards is None:
        return 0, n_total
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard must be in [0, n_shards={n_shards}); got {shard}")
    return shard * n_total // n_shards, (shard + 1) * n_total // n_shards


def write_dataset(directory: str | Path, world: FeatureWorld, seed: int, n_total: int, *,
                  shard: int | None = None, n_shards: int | None = None,
                  overwrite: bool = False, part_size: int | None = None,
                  progress: bool = False, preview: Callable[[FeatureSample], bytes] | None = None
                  ) -> dict[str, Any]:
    """Draw images [start, stop) of ``world.sample(n_total, seed, shard=, n_shards=)`` and
    write them to ``directory`` part by part (bounded memory); returns the manifest.

    ``part_size`` (a multiple of ``BLOCK_SIZE``; default :func:`part_size_for`) sets the images
    per part; the files' content does not depend on it.  ``preview``, given the first part,
    returns the bytes of ``preview.png``.
    """
    for name, value in (("seed", seed), ("n_total", n_total)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0; got {value!r}")
    start, stop = _shard_range(int(n_total), shard, n_shards)
    size = part_size_for(world) if part_size is None else part_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % BLOCK_SIZE:
        raise ValueError(f"part_size must be a positive multiple of {BLOCK_SIZE}; got {size!r}")
    # absolute boundaries (multiples of size): each block is drawn by exactly one part
    bounds = sorted({start, stop, *range((start // size + 1) * size, stop, size)})
    ranges = list(itertools.pairwise(bounds)) or [(start, stop)]
    iterator: Any = ranges
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(ranges, desc="writing", unit="part", leave=False)
    n_rejected = 0
    rejections: dict[str, int] = {}
    with atomic_directory(directory, overwrite=overwrite) as staging:
        writer = _PartWriter(staging, world)
        for low, high in iterator:
            sample = sample_range(world, int(seed), low, high)
            writer.write(sample)
            n_rejected += sample.n_rejected
            for reason, count in sample.rejections.items():
                rejections[reason] = rejections.get(reason, 0) + count
            if preview is not None and len(writer.parts) == 1:
                write_bytes(staging / "preview.png", preview(sample))
            del sample  # before the next draw: memory holds one part at a time
        manifest = writer.manifest(seed=seed, n_total=n_total, shard=shard, n_shards=n_shards,
                                   start=start, stop=stop, n_rejected=n_rejected,
                                   rejections=rejections)
        write_text(staging / "manifest.json", to_json(manifest) + "\n")
    return manifest


def save_dataset(directory: str | Path, sample: FeatureSample, world: FeatureWorld, *,
                 seed: int, n_total: int | None = None, shard: int | None = None,
                 n_shards: int | None = None, overwrite: bool = False,
                 part_size: int | None = None) -> Path:
    """Write ``sample`` (drawn from ``world`` with ``seed``, already in memory) to
    ``directory`` in the layout of :func:`write_dataset`."""
    if not isinstance(sample, FeatureSample):
        raise TypeError(f"sample must be a FeatureSample; got {type(sample).__name__}")
    size = part_size_for(world) if part_size is None else part_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"part_size must be a positive integer; got {size!r}")
    target = Path(directory)
    with atomic_directory(target, overwrite=overwrite) as staging:
        writer = _PartWriter(staging, world)
        for low in range(0, max(len(sample), 1), size):
            writer.write(sample[low:low + size])
        manifest = writer.manifest(
            seed=seed, n_total=len(sample) if n_total is None else n_total, shard=shard,
            n_shards=n_shards, start=sample.start, stop=sample.stop,
            n_rejected=sample.n_rejected, rejections=sample.rejections)
        write_text(staging / "manifest.json", to_json(manifest) + "\n")
    return target


# ---------------------------------------------------------------------------------- reading
def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: directory must hold a dataset written by "
                                f"`sparsecnn generate`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("format") not in (FORMAT, FORMAT_V1):
        found = manifest.get("format") if isinstance(manifest, dict) else manifest
        raise ValueError(f"manifest format must be {FORMAT!r} (or {FORMAT_V1!r}); got "
                         f"{found!r}")
    return manifest


def _verified_arrays(root: Path, name: str, manifest: dict[str, Any]) -> dict[str, np.ndarray]:
    if not isinstance(name, str) or not (_PART_NAME.match(name) or name in FILES_V1):
        # names come from a file anyone may edit: never follow one outside the directory
        raise ValueError(f"{root / 'manifest.json'} lists an invalid file name {name!r}")
    data = (root / name).read_bytes()
    expected = manifest["files"][name]["sha256"]
    actual = _sha256(data)
    if actual != expected:
        raise ValueError(f"{root / name} is corrupted: sha256 {actual} does not match the "
                         f"manifest's {expected}")
    try:
        return load_arrays(data)
    except SafetensorError as error:
        raise ValueError(f"{root / name} is not a safetensors file: {error}") from None


def _check_arrays(path: Path, arrays: dict[str, np.ndarray], specs: dict[str, Any],
                  rows: int | None) -> None:
    for key, spec in specs.items():
        if key not in arrays:
            raise ValueError(f"{path} lacks array {key!r} listed in the manifest")
        shape = spec["shape"] if "shape" in spec else [rows, *spec["row_shape"]]
        if list(arrays[key].shape) != shape or str(arrays[key].dtype) != spec["dtype"]:
            raise ValueError(f"{path}: array {key!r} has shape {list(arrays[key].shape)} dtype "
                             f"{arrays[key].dtype}; the manifest expects {shape} "
                             f"{spec['dtype']}")


def _as_sample(world: FeatureWorld, images: np.ndarray, labels: np.ndarray,
               truth: dict[str, np.ndarray], manifest: dict[str, Any], start: int,
               stop: int) -> FeatureSample:
    if images.shape[1:] != (1, *world.image_size):
        raise ValueError(f"images have shape {images.shape}; the world needs (n, 1, "
                         f"{world.image_size[0]}, {world.image_size[1]})")
    return FeatureSample(images=torch.from_numpy(images.copy()),
                         labels=torch.from_numpy(labels.copy()),
                         truth=GroundTruth(*(truth[name] for name in GroundTruth.FIELDS)),
                         n_rejected=manifest["n_rejected"], rejections=manifest["rejections"],
                         start=start, stop=stop)


def _iter_samples(root: Path, manifest: dict[str, Any], world: FeatureWorld
                  ) -> Iterator[FeatureSample]:
    if manifest["format"] == FORMAT_V1:
        loaded = {}
        for name in FILES_V1:
            arrays = _verified_arrays(root, name, manifest)
            _check_arrays(root / name, arrays, manifest["arrays"][name], None)
            loaded[name] = arrays
        images = loaded["images.safetensors"]
        yield _as_sample(world, images["images"], images["labels"],
                         loaded["truth.safetensors"], manifest, manifest["start"],
                         manifest["stop"])
        return
    for part in manifest["parts"]:
        rows = part["stop"] - part["start"]
        loaded = {}
        for kind in ("images", "truth"):
            name = part["files"][kind]
            arrays = _verified_arrays(root, name, manifest)
            _check_arrays(root / name, arrays, manifest["arrays"][kind], rows)
            loaded[kind] = arrays
        yield _as_sample(world, loaded["images"]["images"], loaded["images"]["labels"],
                         loaded["truth"], manifest, part["start"], part["stop"])


def iter_dataset(directory: str | Path) -> tuple[FeatureWorld, dict[str, Any],
                                                 Iterator[FeatureSample]]:
    """The world, the manifest and an iterator over the dataset's parts (each verified when
    reached), for reading a dataset larger than memory.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` when a hash, a shape,
    a file name or the format does not match the manifest.
    """
    root = Path(directory)
    manifest = _read_manifest(root)
    try:
        world = FeatureWorld.from_config(manifest["world"])
    except (KeyError, TypeError) as error:
        raise ValueError(f"{root / 'manifest.json'}: the world configuration is malformed "
                         f"({type(error).__name__}: {error})") from None

    def parts() -> Iterator[FeatureSample]:
        try:
            yield from _iter_samples(root, manifest, world)
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"{root / 'manifest.json'} is malformed: "
                             f"{type(error).__name__}: {error}") from None

    return world, manifest, parts()


def load_dataset(directory: str | Path) -> Dataset:
    """Read a whole dataset written by :func:`write_dataset` or :func:`save_dataset` (or the
    older single-file layout), verifying hashes and shapes (see :func:`iter_dataset`)."""
    world, manifest, parts = iter_dataset(directory)
    samples = list(parts)
    if len(samples) == 1:
        sample = samples[0]
    else:
        sample = FeatureSample(
            images=torch.cat([s.images for s in samples]),
            labels=torch.cat([s.labels for s in samples]),
            truth=GroundTruth.concatenate([s.truth for s in samples]),
            n_rejected=manifest["n_rejected"], rejections=manifest["rejections"],
            start=manifest["start"], stop=manifest["stop"])
    sample.start, sample.stop = manifest["start"], manifest["stop"]
    return Dataset(sample=sample, world=world, manifest=manifest)
