"""Dataset files and the ``generate`` command: round trip, hash and shape verification."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sparsecnn.cli import cli
from sparsecnn.features import load_dataset, preset, save_dataset
from sparsecnn.io import OutputExistsError


@pytest.fixture(scope="module")
def world_and_sample() -> tuple:
    world = preset("default")
    return world, world.sample(120, seed=3)


def test_round_trip(tmp_path: Path, world_and_sample: tuple) -> None:
    world, sample = world_and_sample
    save_dataset(tmp_path / "data", sample, world, seed=3)
    loaded = load_dataset(tmp_path / "data")
    assert torch.equal(loaded.sample.images, sample.images)
    assert torch.equal(loaded.sample.labels, sample.labels)
    for name in sample.truth.FIELDS:
        assert np.array_equal(getattr(loaded.sample.truth, name), getattr(sample.truth, name))
    assert np.array_equal(loaded.world.templates, world.templates)
    # the rebuilt world regenerates the same images from the manifest's seed
    assert torch.equal(loaded.world.sample(120, seed=loaded.manifest["seed"]).images,
                       sample.images)
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert manifest["class_counts"] == np.bincount(sample.labels.numpy(), minlength=4).tolist()


def test_refuses_to_overwrite(tmp_path: Path, world_and_sample: tuple) -> None:
    world, sample = world_and_sample
    save_dataset(tmp_path / "data", sample, world, seed=3)
    with pytest.raises(OutputExistsError, match="pass --overwrite"):
        save_dataset(tmp_path / "data", sample, world, seed=3)
    save_dataset(tmp_path / "data", sample, world, seed=3, overwrite=True)


def test_corrupted_file_is_detected(tmp_path: Path, world_and_sample: tuple) -> None:
    world, sample = world_and_sample
    save_dataset(tmp_path / "data", sample, world, seed=3)
    path = tmp_path / "data" / "images-000000.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"images-000000.safetensors is corrupted: sha256"):
        load_dataset(tmp_path / "data")


def test_shape_mismatch_is_detected(tmp_path: Path, world_and_sample: tuple) -> None:
    world, sample = world_and_sample
    save_dataset(tmp_path / "data", sample, world, seed=3)
    manifest_path = tmp_path / "data" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["arrays"]["images"]["labels"]["row_shape"] = [7]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="array 'labels' has shape"):
        load_dataset(tmp_path / "data")


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"manifest\.json not found"):
        load_dataset(tmp_path)


def test_generate_command_shards(tmp_path: Path) -> None:
    runner = CliRunner()
    full = tmp_path / "full"
    result = runner.invoke(cli, ["generate", "--n", "700", "--seed", "2", "--out", str(full)])
    assert result.exit_code == 0, result.output
    parts = []
    for shard in range(2):
        out = tmp_path / f"shard{shard}"
        result = runner.invoke(cli, ["generate", "--n", "700", "--seed", "2", "--shard",
                                     str(shard), "--n-shards", "2", "--out", str(out)])
        assert result.exit_code == 0, result.output
        parts.append(load_dataset(out).sample.images)
    assert torch.equal(torch.cat(parts), load_dataset(full).sample.images)
    assert (full / "preview.png").read_bytes()[:4] == b"\x89PNG"
    again = runner.invoke(cli, ["generate", "--n", "10", "--out", str(full)])
    assert again.exit_code != 0 and "pass --overwrite" in again.output
