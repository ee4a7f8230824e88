"""Exact resume: an interrupted run continued with ``resume=True`` ends with weights that are
bit-identical to an uninterrupted run."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sparsecnn.training import TrainingConfig, latest_checkpoint, train

SMALL = {"channels": (4, 8), "strides": (1, 2), "epochs": 4, "batch_size": 128,
         "dtype": "float64"}


class Interrupted(Exception):
    """Stands for a crash in the middle of an epoch."""


def interrupt_at(epoch: int, step_in_epoch: int):
    def callback(event: str, info: dict) -> None:
        steps_per_epoch = 8  # ceil(898 / 128)
        if event == "step" and info["epoch"] == epoch and \
                info["step"] == (epoch - 1) * steps_per_epoch + step_in_epoch:
            raise Interrupted
    return callback


def assert_same_weights(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


@pytest.mark.parametrize(("optimizer", "model", "n_iter"), [
    ("adamw", "cnn", 0), ("sgd", "cnn", 0), ("adamw", "sparse", 2), ("sgd", "ml_ista", 2)])
def test_resume_after_interruption_is_bit_identical(tmp_path: Path, optimizer: str, model: str,
                                                    n_iter: int) -> None:
    config = TrainingConfig(optimizer=optimizer, learning_rate=0.01, model=model,
                            n_iter=n_iter, proper_prior=model == "sparse", **SMALL)
    reference = train(config, tmp_path / "reference", progress=False)

    interrupted = tmp_path / "interrupted"
    with pytest.raises(Interrupted):
        train(config, interrupted, progress=False, callback=interrupt_at(3, 4))
    assert latest_checkpoint(interrupted).name == "epoch-0002"
    assert not (interrupted / "model.safetensors").exists()

    resumed = train(config, interrupted, resume=True, progress=False)
    assert resumed.resumed_from_epoch == 2
    assert_same_weights(load_file(reference.out_dir / "model.safetensors"),
                        load_file(interrupted / "model.safetensors"))
    # the metrics log is the uninterrupted one, epoch by epoch
    lines = (interrupted / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]
    assert [m["test_accuracy"] for m in resumed.metrics] == \
        [m["test_accuracy"] for m in reference.metrics]


def test_resume_after_killed_process_is_bit_identical(tmp_path: Path) -> None:
    """A real crash: a child process is killed (``os._exit``, no clean-up) in epoch 3."""
    config = TrainingConfig(**SMALL)
    script = textwrap.dedent(f"""
        import json, os, torch
        torch.set_num_threads(torch.get_num_threads())
        from sparsecnn.training import TrainingConfig, train
        config = TrainingConfig.from_dict(json.loads({json.dumps(config.to_dict())!r}))
        def die(event, info):
            if event == "step" and info["step"] == 19:
                os._exit(3)
        train(config, {str(tmp_path / "run")!r}, progress=False, callback=die)
    """)
    threads = torch.get_num_threads()
    script = script.replace("torch.get_num_threads()", str(threads))
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                               timeout=300)
    assert completed.returncode == 3, completed.stderr
    assert latest_checkpoint(tmp_path / "run").name == "epoch-0002"
    train(config, tmp_path / "run", resume=True, progress=False)
    reference = train(config, tmp_path / "reference", progress=False)
    assert_same_weights(load_file(reference.out_dir / "model.safetensors"),
                        load_file(tmp_path / "run" / "model.safetensors"))


def test_resume_without_checkpoint_starts_from_scratch(tmp_path: Path) -> None:
    config = TrainingConfig(**{**SMALL, "epochs": 2})
    with pytest.raises(Interrupted):
        train(config, tmp_path / "run", progress=False, callback=interrupt_at(1, 3))
    assert latest_checkpoint(tmp_path / "run") is None
    resumed = train(config, tmp_path / "run", resume=True, progress=False)
    reference = train(config, None, progress=False)
    assert resumed.resumed_from_epoch == 0
    assert_same_weights(resumed.model.state_dict(), reference.model.state_dict())
