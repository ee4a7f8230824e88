"""``sparsecnn interpret``: files written, default model, refusals and clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from sparsecnn.commands.interpret import command
from sparsecnn.training import (
    ARCHITECTURE_FORMAT,
    build_from_architecture,
    load_model,
    save_model,
)


@pytest.fixture(autouse=True)
def _seeded_default_initialisation() -> None:
    """Layers built with PyTorch's default initialisation (nn.Conv2d, nn.Linear) are the same
    whatever the test order or worker."""
    torch.manual_seed(0)

ARCHITECTURE = {
    "format": ARCHITECTURE_FORMAT,
    "input_shape": [2, 6, 6],
    "layers": [
        {"type": "conv2d", "in_channels": 2, "out_channels": 3, "kernel_size": 3, "stride": 2,
         "padding": 1},
        {"type": "relu"},
        {"type": "flatten"},
        {"type": "linear", "in_features": 27, "out_features": 4},
    ],
}


@pytest.fixture
def model_file(tmp_path):
    torch.manual_seed(0)
    model = build_from_architecture(ARCHITECTURE)
    path = tmp_path / "model.safetensors"
    save_model(path, model, ARCHITECTURE)
    return path, model


def test_interpret_a_saved_model(tmp_path, model_file):
    path, model = model_file
    out = tmp_path / "out"
    result = CliRunner().invoke(command, [str(path), "--out", str(out), "--n-inputs", "3",
                                          "--max-iter", "30", "--no-progress"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert [layer["name"] for layer in report["layers"]] == ["0", "3"]
    weight = model[0].weight.detach().double()
    expected = (-model[0].bias.detach().double()
                / torch.linalg.vector_norm(weight.flatten(1), dim=1)).tolist()
    assert report["layers"][0]["thresholds"] == pytest.approx(expected, rel=1e-6)
    for name in ("atoms.png", "thresholds.png", "gaps.png", "run.json", "report.txt"):
        assert (out / name).exists()
    assert "standard normal" in json.loads((out / "run.json").read_text())["inputs"]
    again = CliRunner().invoke(command, [str(path), "--out", str(out)])
    assert again.exit_code != 0 and "exists; pass --overwrite" in again.output


def test_corrupted_and_mismatched_models_are_refused(tmp_path, model_file):
    path, _ = model_file
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(path.read_bytes()[:40])
    result = CliRunner().invoke(command, [str(broken), "--out", str(tmp_path / "a")])
    assert result.exit_code != 0
    assert "is not a readable safetensors file" in result.output
    assert not (tmp_path / "a").exists()
    other = dict(ARCHITECTURE, layers=[dict(ARCHITECTURE["layers"][0], out_channels=5),
                                       *ARCHITECTURE["layers"][1:]])
    architecture = tmp_path / "other.json"
    architecture.write_text(json.dumps(other))
    result = CliRunner().invoke(command, [str(path), "--architecture", str(architecture),
                                          "--out", str(tmp_path / "b")])
    assert result.exit_code != 0
    assert "do not match the architecture" in result.output
    assert "0.weight: file (3, 2, 3, 3), architecture (5, 2, 3, 3)" in result.output


def test_default_model_is_trained_saved_and_reloadable(tmp_path):
    out = tmp_path / "default"
    result = CliRunner().invoke(command, ["--out", str(out), "--epochs", "2", "--n-inputs", "2",
                                          "--max-iter", "20", "--no-progress"])
    assert result.exit_code == 0, result.output
    run = json.loads((out / "run.json").read_text())
    assert run["test_accuracy"] > 0.5 and run["inputs"] == "digits test images"
    model, architecture = load_model(out / "model.safetensors")
    assert architecture == json.loads((out / "architecture.json").read_text())
    assert isinstance(model[0], nn.Conv2d)


@pytest.mark.parametrize(("architecture", "message"), [
    ({"input_shape": [1, 8, 8], "layers": [{"type": "dropout"}]},
     r"layer 0 must be an object with 'type' in"),
    ({"input_shape": [1, 8, 8], "layers": [{"type": "conv2d", "in_channels": 1}]},
     r"missing \['out_channels', 'kernel_size'\]"),
    ({"input_shape": [0], "layers": [{"type": "relu"}]},
     r"'input_shape' must be a list of positive integers"),
    ({"input_shape": [1, 8, 8], "layers": []}, r"non-empty list 'layers'"),
])
def test_bad_architectures(architecture, message):
    with pytest.raises(ValueError, match=message):
        build_from_architecture(architecture)
