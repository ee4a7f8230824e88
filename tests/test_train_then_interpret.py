"""A `sparsecnn train` run, or its model file alone, can be read by `sparsecnn interpret` and
`sparsecnn.training.load_model` directly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from sparsecnn.cli import cli
from sparsecnn.training import TrainingConfig, load_model, load_run, train


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


@pytest.mark.parametrize(("model", "n_iter"), [("cnn", 0), ("sparse", 2)])
def test_a_trained_model_file_loads_on_its_own(tmp_path: Path, model: str, n_iter: int) -> None:
    """The file alone (moved away from its run directory) rebuilds the model of the run: the
    same logits on the run's test images as the run-directory loader's."""
    config = TrainingConfig(model=model, n_iter=n_iter, channels=(4,), strides=(2,), epochs=1,
                            batch_size=256)
    run = tmp_path / "run"
    train(config, run, progress=False)
    alone = tmp_path / "elsewhere" / "model.safetensors"
    alone.parent.mkdir()
    shutil.copyfile(run / "model.safetensors", alone)
    loaded, description = load_model(alone)
    assert description["input_shape"] == [1, 8, 8] and description["n_classes"] == 10
    assert description["config"] == config.to_dict()
    reference = load_run(run)
    images = reference.data.test_images[:32]
    with torch.no_grad():
        assert torch.equal(loaded(images), reference.model(images))


def test_a_damaged_training_description_is_a_clear_error(tmp_path: Path) -> None:
    from safetensors.torch import save

    path = tmp_path / "model.safetensors"
    path.write_bytes(save({"head.weight": torch.zeros(10, 4)}, metadata={
        "sparsecnn_training_model": json.dumps({"format": "sparsecnn-training-model/1",
                                                "config": {}, "input_shape": [1, 8],
                                                "n_classes": 10})}))
    with pytest.raises(ValueError, match=r"training description in .*model\.safetensors "
                                         r"metadata is invalid: 'input_shape' must be"):
        load_model(path)


def test_interpret_reads_a_trained_model_file_alone(tmp_path: Path) -> None:
    """`sparsecnn interpret runs/train1/model.safetensors` (the README command): before, it
    failed with "no architecture ... pass --architecture"."""
    run = tmp_path / "train"
    train(TrainingConfig(channels=(4,), strides=(2,), epochs=1, batch_size=256), run,
          progress=False)
    alone = tmp_path / "model.safetensors"
    shutil.copyfile(run / "model.safetensors", alone)
    out = tmp_path / "interpret"
    result = CliRunner().invoke(cli, ["interpret", str(alone), "--out", str(out),
                                      "--n-inputs", "4", "--max-iter", "50", "--no-progress"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    weights = load_file(str(alone))
    first = report["layers"][0]
    weight, bias = weights[f"{first['name']}.weight"], weights[f"{first['name']}.bias"]
    expected = -bias / torch.linalg.vector_norm(weight.flatten(1), dim=1)
    assert torch.allclose(torch.tensor(first["thresholds"], dtype=torch.float64),
                          expected.double(), atol=1e-6)
    assert "digits test images" in (out / "run.json").read_text()
