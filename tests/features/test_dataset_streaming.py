"""Streaming dataset files: ``write_dataset`` writes part by part with
bounded memory; the images, labels, ground truth and rejection counts do not depend on the
part size and equal the in-memory draw; the older single-file layout is still read; a
manifest cannot make the reader open files outside the dataset directory."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save as save_arrays

from sparsecnn.features import BLOCK_SIZE, load_dataset, preset
from sparsecnn.features.dataset_files import (
    FORMAT_V1,
    image_bytes,
    iter_dataset,
    part_size_for,
    write_dataset,
)


@pytest.fixture(scope="module")
def world():
    # distractors and noise on, so that rejections and noise draws are exercised
    return preset("default", distractors=4)


def assert_same_sample(left, right) -> None:
    assert torch.equal(left.images, right.images)
    assert torch.equal(left.labels, right.labels)
    for name in left.truth.FIELDS:
        np.testing.assert_array_equal(getattr(left.truth, name), getattr(right.truth, name))


def test_parts_are_bit_identical_whatever_their_size(tmp_path: Path, world) -> None:
    n = 2 * BLOCK_SIZE + 300
    expected = world.sample(n, seed=5, shard=1, n_shards=2)  # images [662, 1324): 2 blocks
    manifests = {}
    for size in (BLOCK_SIZE, 2 * BLOCK_SIZE, part_size_for(world)):
        manifests[size] = write_dataset(tmp_path / f"p{size}", world, 5, n, shard=1,
                                        n_shards=2, part_size=size)
        loaded = load_dataset(tmp_path / f"p{size}")
        assert_same_sample(loaded.sample, expected)
        assert (loaded.sample.start, loaded.sample.stop) == (expected.start, expected.stop)
        assert manifests[size]["n_rejected"] == expected.n_rejected
        assert manifests[size]["rejections"] == expected.rejections
    # parts start on block boundaries: [662, 1024) and [1024, 1324) with one block per part
    assert [(p["start"], p["stop"]) for p in manifests[BLOCK_SIZE]["parts"]] == \
        [(662, 1024), (1024, 1324)]
    assert len(manifests[part_size_for(world)]["parts"]) == 1


def test_memory_is_bounded_by_one_part(tmp_path: Path, world) -> None:
    def peak(n: int, name: str) -> int:
        tracemalloc.start()
        write_dataset(tmp_path / name, world, 0, n, part_size=BLOCK_SIZE)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    one, four = peak(BLOCK_SIZE, "one"), peak(4 * BLOCK_SIZE, "four")
    # holding the images to the end would make the 4-part run's peak grow by 3 parts' bytes
    grown = four - one
    assert grown < 0.5 * BLOCK_SIZE * image_bytes(world), (one, four)


def test_image_bytes_is_the_size_on_disk(tmp_path: Path, world) -> None:
    manifest = write_dataset(tmp_path / "d", world, 0, 700, part_size=BLOCK_SIZE)
    total = sum(entry["bytes"] for entry in manifest["files"].values())
    headers = total - 700 * image_bytes(world)
    # what is left is the safetensors headers: JSON of a few hundred bytes per file
    assert 0 <= headers < 1024 * len(manifest["files"])


def test_the_single_file_layout_is_still_read(tmp_path: Path, world) -> None:
    sample = world.sample(40, seed=2)
    root = tmp_path / "v1"
    root.mkdir()
    contents = {"images.safetensors": {"images": sample.images.numpy(),
                                       "labels": sample.labels.numpy()},
                "truth.safetensors": sample.truth.arrays()}
    files = {}
    for name, content in contents.items():
        data = save_arrays(content)
        (root / name).write_bytes(data)
        import hashlib

        files[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    manifest = {"format": FORMAT_V1, "world": world.config(), "seed": 2, "n_total": 40,
                "shard": None, "n_shards": None, "start": 0, "stop": 40, "n_images": 40,
                "n_rejected": sample.n_rejected, "rejections": sample.rejections,
                "arrays": {name: {key: {"shape": list(v.shape), "dtype": str(v.dtype)}
                                  for key, v in content.items()}
                           for name, content in contents.items()},
                "files": files}
    (root / "manifest.json").write_text(json.dumps(manifest))
    assert_same_sample(load_dataset(root).sample, sample)


@pytest.mark.parametrize("name", ["../outside.safetensors", "/etc/passwd",
                                  "images-000000.safetensors/../../x"])
def test_manifest_file_names_cannot_leave_the_directory(tmp_path: Path, world,
                                                        name: str) -> None:
    write_dataset(tmp_path / "d", world, 0, 10)
    path = tmp_path / "d" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["parts"][0]["files"]["images"] = name
    path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="lists an invalid file name"):
        load_dataset(tmp_path / "d")


def test_malformed_manifest_is_a_value_error(tmp_path: Path, world) -> None:
    write_dataset(tmp_path / "d", world, 0, 10)
    path = tmp_path / "d" / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["parts"][0]["stop"]
    path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="is malformed: KeyError"):
        load_dataset(tmp_path / "d")
    path.write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        load_dataset(tmp_path / "d")


def test_iter_dataset_reads_part_by_part(tmp_path: Path, world) -> None:
    write_dataset(tmp_path / "d", world, 1, 3 * BLOCK_SIZE, part_size=BLOCK_SIZE)
    _, manifest, parts = iter_dataset(tmp_path / "d")
    sizes = [len(part) for part in parts]
    assert sizes == [BLOCK_SIZE] * 3 and manifest["n_images"] == 3 * BLOCK_SIZE


@pytest.mark.parametrize(("options", "message"), [
    ({"part_size": 100}, "part_size must be a positive multiple of 512"),
    ({"shard": 2, "n_shards": 2}, r"shard must be in \[0, n_shards=2\)"),
    ({"shard": 0}, "shard and n_shards must be given together"),
])
def test_bad_arguments(tmp_path: Path, world, options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_dataset(tmp_path / "d", world, 0, 10, **options)
    assert not (tmp_path / "d").exists()
