"""A `sparsecnn train` run can be read by `sparsecnn interpret` directly."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from sparsecnn.cli import cli


def test_interpret_reads_a_training_run(tmp_path: Path) -> None:
    run = tmp_path / "train"
    trained = CliRunner().invoke(cli, ["train", "--epochs", "1", "--out", str(run)])
    assert trained.exit_code == 0, trained.output
    out = tmp_path / "interpret"
    result = CliRunner().invoke(cli, ["interpret", str(run), "--out", str(out),
                                      "--n-inputs", "4", "--max-iter", "50"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    weights = load_file(str(run / "model.safetensors"))
    first = report["layers"][0]
    weight, bias = weights[f"{first['name']}.weight"], weights[f"{first['name']}.bias"]
    expected = -bias / torch.linalg.vector_norm(weight.flatten(1), dim=1)
    thresholds = torch.tensor(first["thresholds"], dtype=torch.float64)
    assert torch.allclose(thresholds, expected.double(), atol=1e-6)
    assert first["improper_prior_fraction"] == float((bias > 0).double().mean())
    assert "digits test images" in (out / "run.json").read_text()


def test_unfinished_run_is_refused(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    result = CliRunner().invoke(cli, ["interpret", str(tmp_path / "run"), "--out",
                                      str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "is not a finished sparsecnn train run: config.json is missing" in result.output
