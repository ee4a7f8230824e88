"""``--data NAME|PATH`` on ``sparsecnn interpret`` and ``sparsecnn robustness``: the named or
written dataset is the one used, and a wrong one is refused naming ``--data``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from data_writers import small_idx_arrays, write_idx_dataset

from sparsecnn.cli import cli
from sparsecnn.training import ARCHITECTURE_FORMAT, build_from_architecture, save_model

ARCHITECTURE = {
    "format": ARCHITECTURE_FORMAT, "input_shape": [1, 6, 6],
    "layers": [{"type": "conv2d", "in_channels": 1, "out_channels": 3, "kernel_size": 3,
                "stride": 1, "padding": 0}, {"type": "relu"}, {"type": "flatten"},
               {"type": "linear", "in_features": 48, "out_features": 4}],
}


def idx_directory(path: Path, size: int, n: int = 8, n_classes: int = 4) -> Path:
    return write_idx_dataset(path, small_idx_arrays(1, n, size, n_classes),
                             small_idx_arrays(2, n, size, n_classes))


def test_interpret_reads_the_inputs_from_data(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_from_architecture(ARCHITECTURE)
    save_model(tmp_path / "model.safetensors", model, ARCHITECTURE)
    data = idx_directory(tmp_path / "idx", size=6)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["interpret", str(tmp_path / "model.safetensors"),
                                      "--data", str(data), "--n-inputs", "5", "--out", str(out),
                                      "--max-iter", "20", "--no-progress"])
    assert result.exit_code == 0, result.output
    run = json.loads((out / "run.json").read_text())
    assert run["inputs"] == f"{data} test images"
    report = json.loads((out / "report.json").read_text())
    # the zeros of ReLU(conv(x, w) + b) on the IDX test images x = pixels / 255, by hand
    pixels = small_idx_arrays(2, 8, 6, 4)[0][:5].astype(np.float64) / 255.0
    conv = model[0]
    codes = F.relu(F.conv2d(torch.from_numpy(pixels).unsqueeze(1), conv.weight.double(),
                            conv.bias.double()))
    assert report["n_inputs"] == 5
    assert report["layers"][0]["zero_code_fraction"] == pytest.approx(
        float((codes == 0).double().mean()), abs=1e-12)


@pytest.mark.parametrize("command", [["interpret"], ["robustness", "--no-anomaly"]])
def test_a_missing_dataset_is_refused_naming_data(tmp_path: Path, command: list[str]) -> None:
    result = CliRunner().invoke(cli, [*command, "--data", str(tmp_path / "absent"), "--out",
                                      str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 2
    assert "Invalid value for --data" in result.output and "does not exist" in result.output
    assert not (tmp_path / "out").exists()


def test_interpret_refuses_data_of_another_shape(tmp_path: Path) -> None:
    torch.manual_seed(0)
    save_model(tmp_path / "model.safetensors", build_from_architecture(ARCHITECTURE),
               ARCHITECTURE)
    data = idx_directory(tmp_path / "idx", size=7)
    result = CliRunner().invoke(cli, ["interpret", str(tmp_path / "model.safetensors"),
                                      "--data", str(data), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "the model takes images of shape [1, 6, 6]" in result.output
    assert "has [1, 7, 7]" in result.output


def test_robustness_trains_and_evaluates_on_data(tmp_path: Path) -> None:
    data = idx_directory(tmp_path / "idx", size=8, n=12)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, [
        "robustness", "--data", str(data), "--epochs", "1", "--n-iter", "0", "--n-images", "6",
        "--pgd-steps", "1", "--n-minimal", "0", "--epsilons-linf", "0", "--epsilons-l2", "0",
        "--no-anomaly", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "robustness.json").read_text())
    assert report["dataset"] == str(data) and report["n_images"] == 6
