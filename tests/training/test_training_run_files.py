"""The files of a training run under bad conditions: a diverging run, a hand-edited or
inconsistent ``state.json``, a second run into the same directory, ``--overwrite`` beside
foreign files, leftovers of interrupted writes, and extending a finished run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from sparsecnn.cli import cli
from sparsecnn.io import OutputExistsError
from sparsecnn.training import (
    CheckpointError,
    TrainingConfig,
    TrainingDivergedError,
    latest_checkpoint,
    load_checkpoint,
    train,
)
from sparsecnn.training.rundir import RunLock, RunLockedError

# 898 training digits in batches of 256: 4 steps per epoch
CONFIG = TrainingConfig(channels=(4,), strides=(2,), epochs=2, batch_size=256)


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def epochs_of(metrics_file: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in metrics_file.read_text().splitlines()]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    train(CONFIG, out, progress=False)
    return out


@pytest.fixture
def run_copy(finished_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def test_diverging_run_stops_before_writing_a_non_finite_checkpoint(tmp_path: Path) -> None:
    """SGD with lr 1e20 overflows in epoch 2 (the cross-entropy of a finite model is finite,
    so the first epoch's weights are finite and must stay the latest checkpoint)."""
    config = TrainingConfig.from_dict({**CONFIG.to_dict(), "optimizer": "sgd",
                                       "learning_rate": 1e20, "epochs": 3})
    out = tmp_path / "run"
    with pytest.raises(TrainingDivergedError,
                       match=r"training diverged in epoch 2 at step [5-8] \(.*non-finite "
                             r"weights.*the latest checkpoint is still .*epoch-0001 \(finite\).*"
                             r"lower the learning rate \(--lr, now 1e\+20\)"):
        train(config, out, progress=False)
    assert latest_checkpoint(out).name == "epoch-0001"
    checkpoint = load_checkpoint(latest_checkpoint(out))
    assert all(bool(torch.isfinite(t).all()) for t in checkpoint.model.values())
    assert epochs_of(out / "metrics.jsonl") == [1]
    assert not (out / "model.safetensors").exists()


def test_diverging_run_through_the_command_is_one_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, [
        "train", "--optimizer", "sgd", "--lr", "1e20", "--epochs", "2", "--channels", "4",
        "--strides", "2", "--batch-size", "256", "--no-progress", "--out", str(tmp_path / "r")])
    assert result.exit_code == 1
    assert "training diverged in epoch" in result.output
    assert "Out of range float values" not in result.output


def _edit_state(run: Path, edit) -> Path:
    directory = run / "checkpoints" / "epoch-0002"
    state = json.loads((directory / "state.json").read_text())
    edit(state)
    (directory / "state.json").write_text(json.dumps(state))
    return directory


def _set(key: str, value):
    return lambda state: state.__setitem__(key, value)


def _set_lr(state: dict) -> None:
    state["optimizer"]["param_groups"][0]["lr"] = 1e9


def _set_config(key: str, value):
    return lambda state: state["config"].__setitem__(key, value)


@pytest.mark.parametrize(("edit", "message"), [
    (_set("epoch", -5), r"'epoch' must be an integer >= 1; got -5"),
    (_set("epoch", 99), r"'epoch' is 99 but the directory is epoch-0002"),
    (_set("epoch", "2"), r"'epoch' must be an integer >= 1; got '2'"),
    (_set("epoch", True), r"'epoch' must be an integer >= 1; got True"),
    (_set("global_step", None), r"'global_step' must be an integer >= epoch; got None"),
    (_set("config", [1, 2]), r"'config' is not a training configuration"),
    (_set("config", None), r"'config' is not a training configuration"),
    (_set("optimizer", "adamw"), r"'optimizer' must hold one parameter group"),
    (_set("sha256", {}), r"'sha256' must map each of"),
    (_set("config_hash", "0" * 64), r"'config_hash' is not the hash of 'config'"),
    (_set_lr, r"optimizer 'lr' is 1000000000\.0 but the configuration says 0\.003"),
    # an edited config with a matching hash is still refused against this run's config
    (_set_config("seed", "x"), r"seed must be an integer"),
])
def test_edited_state_json_is_refused_and_nothing_is_written(run_copy: Path, edit,
                                                             message: str) -> None:
    _edit_state(run_copy, edit)
    before = snapshot(run_copy)
    with pytest.raises(CheckpointError, match=r"state\.json is corrupted: .*" + message):
        train(CONFIG, run_copy, resume=True, progress=False)
    assert snapshot(run_copy) == before


def test_state_json_that_is_not_an_object_is_refused(run_copy: Path) -> None:
    (run_copy / "checkpoints" / "epoch-0002" / "state.json").write_text("[]")
    with pytest.raises(CheckpointError, match=r"expected a JSON object; got list"):
        train(CONFIG, run_copy, resume=True, progress=False)


def test_epoch_beyond_the_configuration_is_refused(run_copy: Path) -> None:
    """epoch 99 in a directory renamed to match: no longer silently 'nothing to train'."""
    directory = _edit_state(run_copy, _set("epoch", 99))
    directory.rename(directory.with_name("epoch-0099"))
    with pytest.raises(CheckpointError, match=r"'epoch' 99 is beyond the configured 2 epochs"):
        train(CONFIG, run_copy, resume=True, progress=False)


def test_global_step_inconsistent_with_the_epoch_is_refused(run_copy: Path) -> None:
    _edit_state(run_copy, _set("global_step", 7))
    before = snapshot(run_copy)
    with pytest.raises(CheckpointError, match=r"records global_step 7 after 2 epochs, but an "
                                              r"epoch of this run takes 4 steps \(expected 8\)"):
        train(CONFIG, run_copy, resume=True, progress=False)
    assert snapshot(run_copy) == before


def test_checkpoint_metrics_damaged_is_refused(run_copy: Path) -> None:
    file = run_copy / "checkpoints" / "epoch-0002" / "metrics.jsonl"
    file.write_text(file.read_text().splitlines()[0] + "\n")
    with pytest.raises(CheckpointError, match=r"metrics\.jsonl is corrupted or truncated"):
        train(CONFIG, run_copy, resume=True, progress=False)


def test_a_second_run_into_a_locked_directory_fails_at_once(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with RunLock(out):
        with pytest.raises(RunLockedError, match=rf"another sparsecnn train \(pid {os.getpid()}"
                                                 rf"\) is writing to {out}"):
            train(CONFIG, out, progress=False)
    assert os.listdir(out) == [".sparsecnn-train.lock"]


@pytest.mark.slow  # a second Python process: ~3 s of imports on a busy machine
def test_lock_held_by_another_process_names_it_and_dies_with_it(tmp_path: Path) -> None:
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; "
         "from sparsecnn.training.rundir import RunLock\n"
         f"with RunLock(Path({str(out)!r})):\n    print('locked', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = CliRunner().invoke(cli, ["train", "--epochs", "1", "--channels", "4",
                                          "--strides", "2", "--no-progress", "--out", str(out)])
        assert result.exit_code == 1
        assert f"another sparsecnn train (pid {holder.pid}) is writing to" in result.output
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    # SIGKILL leaves the lock file but not the lock
    with RunLock(out):
        pass


def test_overwrite_keeps_foreign_files(run_copy: Path) -> None:
    foreign = {"checkpoints/my_other_stuff/important.bin": b"\x00keep",
               "notes.txt": b"my notes"}
    for name, data in foreign.items():
        (run_copy / name).parent.mkdir(parents=True, exist_ok=True)
        (run_copy / name).write_bytes(data)
    (run_copy / "checkpoints" / "epoch-0002").rename(run_copy / "checkpoints" / "epoch-0009")
    with pytest.raises(OutputExistsError, match="pass --overwrite"):
        train(CONFIG, run_copy, progress=False)
    train(CONFIG, run_copy, overwrite=True, progress=False)
    for name, data in foreign.items():
        assert (run_copy / name).read_bytes() == data
    # train's own stale checkpoint (epoch-0009) is gone, the new ones are there
    assert sorted(p.name for p in (run_copy / "checkpoints").iterdir()) == \
        ["epoch-0001", "epoch-0002", "my_other_stuff"]


def test_overwrite_refuses_foreign_files_inside_a_checkpoint(run_copy: Path) -> None:
    (run_copy / "checkpoints" / "epoch-0001" / "extra.bin").write_bytes(b"mine")
    before = snapshot(run_copy)
    with pytest.raises(OutputExistsError, match=r"did not write \(checkpoints/epoch-0001/"
                                                r"extra\.bin\)"):
        train(CONFIG, run_copy, overwrite=True, progress=False)
    assert snapshot(run_copy) == before


def test_resume_recovers_metrics_and_removes_leftovers(run_copy: Path,
                                                       finished_run: Path) -> None:
    """A kill after the checkpoint rename but before the metrics copy: the checkpoint's own
    records restore the log; the temporary files of interrupted writes are removed."""
    (run_copy / "metrics.jsonl").write_text(
        (run_copy / "metrics.jsonl").read_text().splitlines()[0] + "\n{\"epo")
    leftovers = [run_copy / ".metrics.jsonl.k3j2l1.tmp", run_copy / ".model.safetensors.a.tmp",
                 run_copy / "checkpoints" / ".epoch-0003.x81.tmp" / "state.json",
                 run_copy / "checkpoints" / ".epoch-0002.q.old" / "previous" / "a"]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    user_file = run_copy / ".metrics.jsonl.mine"
    user_file.write_text("not a leftover")
    train(CONFIG, run_copy, resume=True, progress=False)
    assert (run_copy / "metrics.jsonl").read_text() == \
        (finished_run / "metrics.jsonl").read_text()
    assert not any(path.exists() for path in leftovers)
    assert not (run_copy / "checkpoints" / ".epoch-0003.x81.tmp").exists()
    assert user_file.exists()


def test_resume_extends_a_finished_run_bit_identically(run_copy: Path, tmp_path: Path) -> None:
    """2 epochs, then --resume with epochs=4, equals 4 epochs straight (weights and every
    metric but the wall-clock seconds)."""
    longer = TrainingConfig.from_dict({**CONFIG.to_dict(), "epochs": 4})
    extended = train(longer, run_copy, resume=True, progress=False)
    assert extended.resumed_from_epoch == 2
    straight = train(longer, tmp_path / "straight", progress=False)
    first = load_file(run_copy / "model.safetensors")
    second = load_file(straight.out_dir / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)

    def without_seconds(file: Path) -> list[dict]:
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                for line in file.read_text().splitlines()]

    assert without_seconds(run_copy / "metrics.jsonl") == \
        without_seconds(straight.out_dir / "metrics.jsonl")
    assert json.loads((run_copy / "config.json").read_text())["config"]["epochs"] == 4


def test_resume_with_fewer_epochs_than_trained_is_refused(run_copy: Path) -> None:
    before = snapshot(run_copy)
    result = CliRunner().invoke(cli, ["train", "--epochs", "1", "--channels", "4", "--strides",
                                      "2", "--batch-size", "256", "--no-progress", "--resume",
                                      "--out", str(run_copy)])
    assert result.exit_code == 1
    assert "has already trained 2 epochs and epochs=1 is fewer; pass --epochs >= 2" in \
        result.output
    assert snapshot(run_copy) == before


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=5)
_FIELDS = [("epoch",), ("global_step",), ("config",), ("config", "learning_rate"),
           ("config", "channels"), ("config", "epochs"), ("config", "dtype"), ("config_hash",),
           ("optimizer",), ("optimizer", "param_groups"), ("optimizer", "param_groups", 0),
           ("optimizer", "param_groups", 0, "lr"), ("optimizer", "param_groups", 0, "params"),
           ("optimizer", "scalars"), ("sha256",), ("sha256", "model.safetensors")]


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(_FIELDS), value=_JSON)
def test_any_edit_of_state_json_is_refused_or_harmless(finished_run: Path, field: tuple,
                                                       value) -> None:
    """For every field of state.json and every JSON value put there, resuming either refuses
    with CheckpointError or the value equals the original: never another exception."""
    with tempfile.TemporaryDirectory() as scratch:
        run = Path(scratch) / "run"
        shutil.copytree(finished_run, run)
        state_file = run / "checkpoints" / "epoch-0002" / "state.json"
        state = json.loads(state_file.read_text())
        parent = state
        for key in field[:-1]:
            parent = parent[key]
        original = parent[field[-1]]
        parent[field[-1]] = value
        state_file.write_text(json.dumps(state))
        try:
            train(CONFIG, run, resume=True, progress=False)
        except CheckpointError:
            return
        assert value == original, f"{field} = {value!r} was accepted"


@pytest.mark.parametrize(("key", "value"), [("params", "0000"), ("betas", [0.5, 0.5]),
                                            ("eps", "tiny")])
def test_optimizer_settings_the_configuration_does_not_produce_are_refused(
        run_copy: Path, key: str, value) -> None:
    """Found by the property above: torch's load_state_dict accepts these (params '0000' has
    the right length) and would train with them, or fail only in the next step."""
    _edit_state(run_copy, lambda state: state["optimizer"]["param_groups"][0].__setitem__(
        key, value))
    with pytest.raises(CheckpointError, match=rf"optimizer settings that this configuration "
                                              rf"does not produce \({key}\)"):
        train(CONFIG, run_copy, resume=True, progress=False)
