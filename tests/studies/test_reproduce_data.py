"""``sparsecnn reproduce --data``: the studies that train classifiers use the named dataset
(:meth:`sparsecnn.report.study.StudyContext.classification_split`), a bad one is a usage error
before any study runs."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from sparsecnn.cli import cli
from sparsecnn.data import load_digits_split
from sparsecnn.report.study import StudyContext
from sparsecnn.studies import paper1_features, paper1_models


def _idx(array: np.ndarray) -> bytes:
    # IDX: two zero bytes, type 0x08 (unsigned byte), the number of dimensions, big-endian sizes
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_idx_dataset(directory: Path, n_train: int, n_test: int, size: int) -> Path:
    """Two classes a classifier can tell apart: a bright left half or a bright right half."""
    rng = np.random.default_rng(0)
    directory.mkdir()
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 2
        images = rng.integers(0, 60, size=(n, size, size))
        for image, label in zip(images, labels, strict=True):
            image[:, : size // 2] += 180 if label == 0 else 0
            image[:, size // 2:] += 180 if label == 1 else 0
        (directory / f"{split}-images-idx3-ubyte").write_bytes(_idx(images))
        (directory / f"{split}-labels-idx1-ubyte").write_bytes(_idx(labels))
    return directory


def test_context_default_is_the_embedded_digits_split(tmp_path: Path) -> None:
    context = StudyContext(quick=True, seed=0, device="cpu", scratch_dir=tmp_path)
    split, digits = context.classification_split(4), load_digits_split(4)
    assert split.name == "digits"
    assert bool((split.train_images == digits.train_images).all())
    assert bool((split.test_labels == digits.test_labels).all())


def test_training_studies_use_the_given_dataset(tmp_path: Path, monkeypatch) -> None:
    # the wiring is under test, not the models: a budget of a few epochs keeps it fast
    monkeypatch.setattr(paper1_models, "QUICK", paper1_models.Budget(
        seeds=2, complete_channels=(4, 8), complete_epochs=3, unfold=paper1_models.UnfoldBudget(
            channels=(4, 8), epochs=4, batch=16, learning_rate=1e-2, pilot=2, max_seeds=2)))
    monkeypatch.setattr(paper1_features, "QUICK", paper1_features.Budget(
        seeds=1, n_atoms=16, dictionary_steps=3, lista_steps=5))
    data = _write_idx_dataset(tmp_path / "idx", n_train=32, n_test=16, size=10)
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["reproduce", "--quick", "--only", "paper1_models",
                                      "--only", "paper1_features", "--data", str(data),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["data"] == str(data)
    for claim_id in ("P1-check9-complete-model", "P1-check24-split-relu-vs-raw"):
        (claim,) = [c for c in results["claims"] if c["id"] == claim_id]
        assert claim["measured"]["dataset"] == str(data)
    # the features study's dictionary has atoms of the dataset's 10x10 images
    assert results["studies"]["paper1_features"]["results"]["seeds"][0]["image_shape"] == \
        [10, 10]
    # one loss per epoch: the models were trained on this dataset
    pairs = results["studies"]["paper1_models"]["results"]["complete_and_proper"]
    assert all(len(p["free_loss_curve"]) == 3 for p in pairs)
    for claim in results["claims"]:
        if claim["kind"] == "empirical" and claim["verdict"] != "holds":
            assert claim["reason"], claim["id"]


def test_a_missing_dataset_is_a_usage_error_before_any_study(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["reproduce", "--quick", "--data",
                                      str(tmp_path / "absent"), "--out", str(out)])
    assert result.exit_code == 2
    assert "absent" in result.output and "does not exist" in result.output
    assert not out.exists()
