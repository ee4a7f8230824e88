"""The ``sparsecnn`` command on bad input: one ``Error:`` line
and exit code 2 (a command line that cannot work) or 1 (a failure), never a traceback unless
``--debug``; checks made before any work; ``--overwrite`` never deletes a user's files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result

import sparsecnn.features
from sparsecnn.cli import cli
from sparsecnn.commands import _limits

# every command that writes an --out directory, with the options that keep a run tiny
COMMANDS = {
    "generate": ["generate", "--n", "3"],
    "construct": ["construct", "--n", "3"],
    "interpret": ["interpret", "--epochs", "1", "--n-inputs", "1", "--max-iter", "1"],
    "robustness": ["robustness", "--epochs", "1", "--n-images", "2", "--n-iter", "0",
                   "--no-anomaly"],
    "reproduce": ["reproduce", "--quick", "--only", "no-such-study"],
    "train": ["train", "--epochs", "1"],
}
WITH_DEVICE = ["construct", "interpret", "robustness", "reproduce", "train"]


def run(arguments: list[str]) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in arguments])


def assert_one_line_error(result: Result, exit_code: int, *fragments: str) -> str:
    """The result is exit ``exit_code`` with one ``Error:`` line holding ``fragments``."""
    assert result.exit_code == exit_code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        result.exception
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_out_that_is_a_file(tmp_path: Path, name: str) -> None:
    target = tmp_path / "a_file"
    target.write_text("mine")
    result = run([*COMMANDS[name], "--out", target, "--overwrite"] if name != "train"
                 else [*COMMANDS[name], "--out", target, "--resume"])
    assert_one_line_error(result, 2, "is a file; expected a directory")
    assert target.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # no .a_file.old


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_unwritable_out_is_refused_before_the_work(tmp_path: Path, name: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # root may write anywhere, so the permission answer is simulated for this directory;
    # test_read_only_out_as_a_user checks real permissions where the tests do not run as root
    read_only = tmp_path / "ro"
    read_only.mkdir()
    real_access = os.access

    def access(path: object, mode: int) -> bool:
        return Path(path) != read_only and real_access(path, mode)

    monkeypatch.setattr(_limits.os, "access", access)
    started = []
    monkeypatch.setattr(sparsecnn.features, "preset",
                        lambda *a, **k: started.append(1))  # the first step of the work
    result = run([*COMMANDS[name], "--out", read_only / "run"])
    assert_one_line_error(result, 1, "is not writable")
    assert not started


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_out_as_a_user(tmp_path: Path) -> None:
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        result = run([*COMMANDS["generate"], "--out", read_only / "run"])
        assert_one_line_error(result, 1, "is not writable")
    finally:
        read_only.chmod(0o755)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("name", WITH_DEVICE)
def test_unavailable_device(tmp_path: Path, name: str) -> None:
    result = run([*COMMANDS[name], "--device", "cuda:0", "--out", tmp_path / "run"])
    assert_one_line_error(result, 2, "--device: cannot use device 'cuda:0': not available")
    result = run([*COMMANDS[name], "--device", "warp-drive", "--out", tmp_path / "run"])
    assert_one_line_error(result, 2, "--device: cannot use device 'warp-drive': not a torch device")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("options", "fragment"), [
    (["--shard", "3", "--n-shards", "2"], "--shard must be in [0, --n-shards=2); got 3"),
    (["--shard", "1"], "--shard and --n-shards must be given together"),
    (["--image-size", "100000"], "needs about 176.8 TiB of memory"),
    (["--distractors", str(10**9)], "at most 49 features fit apart on a 28x28 canvas"),
    (["--image-size", "5"], "objects cannot fit the canvas"),
])
def test_generate_sizes_refused_up_front(tmp_path: Path, options: list[str],
                                         fragment: str) -> None:
    result = run([*COMMANDS["generate"], *options, "--out", tmp_path / "run"])
    assert_one_line_error(result, 2, fragment)
    assert not (tmp_path / "run").exists()


def test_generate_refuses_what_cannot_fit_the_disk(tmp_path: Path) -> None:
    # 10**9 default images of 3301 bytes (28*28*4 pixels + label + ground truth) = 3.0 TiB
    # (this machine's disk is smaller; a disk that fits it would start streaming instead)
    import shutil

    if shutil.disk_usage(tmp_path).free > 3.1 * 2**40:
        pytest.skip("the disk has room for 3 TiB")
    result = run(["generate", "--n", str(10**9), "--out", tmp_path / "run"])
    assert_one_line_error(result, 1, "3301 bytes needs about 3.0 TiB of disk")


def test_interpret_refuses_a_huge_input_shape(tmp_path: Path) -> None:
    from sparsecnn.training import save_model
    from sparsecnn.training.architecture import build_from_architecture

    architecture = {"format": "sparsecnn-architecture/1", "input_shape": [1, 100000, 100000],
                    "layers": [{"type": "conv2d", "in_channels": 1, "out_channels": 4,
                                "kernel_size": 3, "stride": 1, "padding": 1}]}
    save_model(tmp_path / "m.safetensors", build_from_architecture(architecture), architecture)
    result = run(["interpret", tmp_path / "m.safetensors", "--n-inputs", "2",
                  "--out", tmp_path / "run"])
    # 2 inputs x 1e10 float32 pixels x (2 + 6 * 4/1) = 1.9 TiB
    assert_one_line_error(result, 2, "2 input(s) of shape [1, 100000, 100000] needs about "
                                     "1.9 TiB of memory")


def test_train_resume_on_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    assert_one_line_error(run(["train", "--resume", "--out", tmp_path / "f"]), 2, "is a file")


def test_unexpected_error_is_one_line_naming_a_bug(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("templates")

    monkeypatch.setattr(sparsecnn.features, "preset", broken)
    arguments = [*COMMANDS["generate"], "--out", tmp_path / "run"]
    line = assert_one_line_error(run(arguments), 1, "internal error (a bug in sparsecnn",
                                 "KeyError: 'templates'", "sparsecnn --debug")
    assert line.count("\n") == 0
    debug = run(["--debug", *arguments])
    assert isinstance(debug.exception, KeyError)  # the traceback is shown, not a summary


def test_documented_errors_keep_their_message(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sparsecnn.features, "preset", full_disk)
    result = run([*COMMANDS["generate"], "--out", tmp_path / "run"])
    assert_one_line_error(result, 1, "No space left on device")


# --------------------------------------------------------------- --overwrite and foreign files
FOREIGN = {"notes.txt": "my notes", "sub/data.csv": "a,b\n1,2\n"}


@pytest.mark.parametrize("name", sorted(set(COMMANDS) - {"train"}))
def test_overwrite_never_deletes_foreign_files(tmp_path: Path, name: str) -> None:
    out = tmp_path / "run"
    for relative, text in FOREIGN.items():
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        (out / relative).write_text(text)
    result = run([*COMMANDS[name], "--out", out, "--overwrite"])
    assert_one_line_error(result, 2, "did not write")
    assert "notes.txt" in result.output and "sub/data.csv" in result.output
    assert "Traceback" not in result.output
    for relative, text in FOREIGN.items():
        assert (out / relative).read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging left behind


def test_generate_overwrites_its_own_output_preview_included(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert run([*COMMANDS["generate"], "--out", out]).exit_code == 0
    # preview.png is written inside the staging directory, so it is in the manifest and the
    # second run may replace it
    again = run([*COMMANDS["generate"], "--out", out, "--overwrite"])
    assert again.exit_code == 0, again.output
    assert (out / "preview.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.parametrize(("channels", "strides", "estimate"), [
    # 4 bytes x (4 copies of 9 * 1 * 10**6 weights + 2 copies of 64 x 10**6 x 8 x 8
    # activations) = 30.7 GiB
    ("1000000", "1", "30.7 GiB"),
    # 4 x 4 x 9 x 10**12 weights of the second layer dominate: 131 TiB
    ("1000000,1000000", "1,2", "131.0 TiB"),
])
def test_train_refuses_channels_that_cannot_fit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                channels: str, strides: str,
                                                estimate: str) -> None:
    monkeypatch.setattr(_limits, "available_memory", lambda: 8 * 2**30)
    result = run(["train", "--channels", channels, "--strides", strides, "--epochs", "1",
                  "--out", tmp_path / "run"])
    assert_one_line_error(result, 2, "--channels", f"needs about {estimate} of memory",
                          "8.0 GiB is available")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # three fresh interpreters importing torch
def test_debug_shows_the_traceback_in_a_real_process(tmp_path: Path) -> None:
    import subprocess
    import sys

    arguments = [sys.executable, "-m", "sparsecnn.cli", "generate", "--n", "3", "--shard", "3",
                 "--n-shards", "2", "--out", str(tmp_path / "run")]
    plain = subprocess.run(arguments, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 2 and plain.stdout == ""
    assert plain.stderr.strip().splitlines() == ["Error: --shard must be in [0, "
                                                 "--n-shards=2); got 3"]
    # a bug, simulated in a real process: one line without --debug, the traceback with it
    script = ("import sys, sparsecnn.features as f; f.preset = lambda *a, **k: {}['boom']; "
              "from sparsecnn.cli import main; sys.argv = ['sparsecnn', *sys.argv[1:]]; main()")
    for debug in ([], ["--debug"]):
        result = subprocess.run([sys.executable, "-c", script, *debug, "generate", "--n", "3",
                                 "--out", str(tmp_path / "run")],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 1
        if debug:
            assert "Traceback" in result.stderr and "KeyError: 'boom'" in result.stderr
        else:
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("Error: internal error"), lines
