"""Bad inputs of training: corrupted or truncated checkpoints (clear
error, nothing overwritten), resuming with a different configuration (refused, with the reason),
existing outputs, invalid configurations."""

from __future__ import annotations

from pathlib import Path

import pytest

from sparsecnn.io import OutputExistsError
from sparsecnn.training import CheckpointError, TrainingConfig, load_checkpoint, train

CONFIG = TrainingConfig(channels=(4,), strides=(2,), epochs=2, batch_size=256)


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture
def finished_run(tmp_path: Path) -> Path:
    out = tmp_path / "run"
    train(CONFIG, out, progress=False)
    return out


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("file", "damage", "message"), [
    ("model.safetensors", truncate, r"model\.safetensors is corrupted or truncated"),
    ("model.safetensors", flip_byte, r"SHA-256 does not match"),
    ("training_state.safetensors", truncate, r"training_state\.safetensors is corrupted"),
    ("state.json", truncate, r"state\.json is corrupted or truncated \(invalid JSON"),
    ("model.safetensors", Path.unlink, r"has no model\.safetensors"),
])
def test_damaged_checkpoint_is_refused_and_nothing_is_written(finished_run: Path, file: str,
                                                              damage, message: str) -> None:
    damage(finished_run / "checkpoints" / "epoch-0002" / file)
    before = snapshot(finished_run)
    with pytest.raises(CheckpointError, match=message):
        train(CONFIG, finished_run, resume=True, progress=False)
    assert snapshot(finished_run) == before
    with pytest.raises(ValueError, match=r"delete .*epoch-0002 to resume from the previous"):
        load_checkpoint(finished_run / "checkpoints" / "epoch-0002")


@pytest.mark.parametrize(("change", "message"), [
    ({"learning_rate": 0.01}, r"learning_rate: checkpoint has 0\.003, this run has 0\.01"),
    ({"channels": (8,)}, r"channels: checkpoint has \[4\], this run has \[8\]"),
    ({"proper_prior": True}, r"proper_prior: checkpoint has False, this run has True"),
])
def test_resume_with_a_different_config_is_refused(finished_run: Path, change: dict,
                                                   message: str) -> None:
    before = snapshot(finished_run)
    changed = TrainingConfig.from_dict({**CONFIG.to_dict(), **change})
    with pytest.raises(ValueError, match=r"refusing to resume: the configuration differs.*"
                       + message):
        train(changed, finished_run, resume=True, progress=False)
    assert snapshot(finished_run) == before


def test_existing_output_needs_overwrite(finished_run: Path) -> None:
    with pytest.raises(OutputExistsError, match="pass --overwrite"):
        train(CONFIG, finished_run, progress=False)
    train(CONFIG, finished_run, overwrite=True, progress=False)
    assert (finished_run / "checkpoints" / "epoch-0002").is_dir()


def test_resume_needs_an_existing_run(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--resume needs an existing run directory"):
        train(CONFIG, tmp_path / "missing", resume=True, progress=False)
    with pytest.raises(ValueError, match="resume=True needs out_dir"):
        train(CONFIG, None, resume=True, progress=False)


@pytest.mark.parametrize(("values", "message"), [
    ({"epochs": 0}, r"epochs must be an integer >= 1; got 0"),
    ({"optimizer": "adam"}, r"optimizer must be one of 'adamw', 'sgd'; got 'adam'"),
    ({"learning_rate": -1.0}, r"learning_rate must be a finite number > 0; got -1\.0"),
    ({"model": "resnet"}, r"model must be one of .*'cnn'.*; got 'resnet'"),
    ({"channels": (4, 8), "strides": (1,)}, r"channels and strides must be non-empty and of "
                                            r"equal length"),
    ({"colour": "red"}, r"unknown training configuration field\(s\) \['colour'\]"),
])
def test_invalid_configuration(values: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainingConfig.from_dict(values)


def test_unknown_dataset_file(tmp_path: Path) -> None:
    config = TrainingConfig(dataset=str(tmp_path / "nope.safetensors"), epochs=1)
    with pytest.raises(ValueError, match=r"dataset must be 'digits' or an existing feature-world "
                       r"dataset directory; got .*nope\.safetensors.*does not exist"):
        train(config, None, progress=False)


def test_train_rejects_a_non_config() -> None:
    with pytest.raises(TypeError, match="config must be a TrainingConfig; got dict"):
        train({"epochs": 1}, None)


def test_bad_device() -> None:
    with pytest.raises(ValueError, match=r"device must be a torch device such as 'cpu' or "
                                         r"'cuda:0'; got 'gpu please'"):
        train(CONFIG, None, progress=False, device="gpu please")


def test_checkpoint_with_mismatched_weights_is_refused(finished_run: Path) -> None:
    """A checkpoint whose (hash-consistent) weights do not fit the configured model."""
    import hashlib
    import json

    import torch
    from safetensors.torch import save

    directory = finished_run / "checkpoints" / "epoch-0002"
    data = save({"features.0.weight": torch.zeros(3, 1, 3, 3)})
    (directory / "model.safetensors").write_bytes(data)
    state = json.loads((directory / "state.json").read_text())
    state["sha256"]["model.safetensors"] = hashlib.sha256(data).hexdigest()
    (directory / "state.json").write_text(json.dumps(state))
    before = snapshot(finished_run)
    with pytest.raises(CheckpointError, match=r"does not fit the model of this configuration"):
        train(CONFIG, finished_run, resume=True, progress=False)
    assert snapshot(finished_run) == before
