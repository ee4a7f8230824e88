"""``sparsecnn train``: files, refusal to overwrite, resume and its refusals."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from sparsecnn.cli import cli

BASE = ["train", "--epochs", "2", "--channels", "4", "--strides", "2", "--batch-size", "256",
        "--no-progress"]


def test_train_command_writes_files_and_refuses_to_overwrite(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "run"
    first = runner.invoke(cli, [*BASE, "--out", str(out)])
    assert first.exit_code == 0, first.output
    assert "test accuracy" in first.output
    for name in ("config.json", "metrics.jsonl", "model.safetensors", "summary.json",
                 "checkpoints/epoch-0002/model.safetensors"):
        assert (out / name).is_file(), name
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]

    again = runner.invoke(cli, [*BASE, "--out", str(out)])
    assert again.exit_code != 0 and "pass --overwrite" in again.output
    changed = runner.invoke(cli, [*BASE, "--out", str(out), "--resume", "--lr", "0.1"])
    assert changed.exit_code != 0
    assert "refusing to resume" in changed.output and "learning_rate" in changed.output
    both = runner.invoke(cli, [*BASE, "--out", str(out), "--resume", "--overwrite"])
    assert both.exit_code != 0 and "contradict" in both.output
    bad = runner.invoke(cli, [*BASE, "--out", str(out), "--channels", "4,x"])
    assert bad.exit_code != 0 and "comma-separated integers" in bad.output


def test_train_command_help() -> None:
    result = CliRunner().invoke(cli, ["train", "--help"])
    assert result.exit_code == 0
    for option in ("--dataset", "--model", "--epochs", "--resume", "--out", "--seed",
                   "--overwrite", "--proper-prior"):
        assert option in result.output
