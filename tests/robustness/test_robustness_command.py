"""``sparsecnn robustness``: files, numbers recomputed independently, refusals and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from sparsecnn.cli import cli
from sparsecnn.data import load_digits_split
from sparsecnn.io import MANIFEST_NAME
from sparsecnn.training import TrainingConfig, build_model

FAST = ["--n-images", "40", "--pgd-steps", "1", "--no-progress"]


def _fake_run(directory: Path) -> torch.nn.Module:
    """A `sparsecnn train`-style run directory holding an untrained (seeded) CNN."""
    config = TrainingConfig(channels=(4, 6), strides=(1, 2), seed=3)
    model = build_model(config, (1, 8, 8), 10)
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"config": config.to_dict()}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(directory / "model.safetensors"))
    return model.eval()


def test_run_directory_is_evaluated_and_numbers_match_a_plain_recomputation(
        tmp_path: Path) -> None:
    model = _fake_run(tmp_path / "run")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["robustness", "--run", str(tmp_path / "run"), "--out",
                                      str(out), "--n-iter", "0,2", "--n-minimal", "3",
                                      "--no-anomaly", "--no-refit-head", *FAST])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_NAME, "attacks.png",
                                                     "corruptions.png", "robustness.json"]
    report = json.loads((out / "robustness.json").read_text())
    data = load_digits_split(seed=0)
    with torch.no_grad():
        expected = float((model(data.test_images[:40]).argmax(1) == data.test_labels[:40])
                         .double().mean())
    k0 = report["models"]["k0"]
    assert k0["clean_accuracy"] == expected
    assert k0["attacks"]["pgd_linf"]["accuracy"][0] == expected
    assert all(curve[0] == expected for curve in k0["corruptions"]["accuracy"].values())
    assert set(report["models"]) == {"k0", "k2"}
    assert (out / "corruptions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_default_model_with_anomaly_table(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["robustness", "--out", str(out), "--n-iter", "0",
                                      "--epochs", "1", "--n-minimal", "0", *FAST])
    assert result.exit_code == 0, result.output
    table = json.loads((out / "anomaly.json").read_text())["table"]
    assert set(table) == {"feature_world", "uniform_noise", "gaussian_noise", "inverted"}
    for scores in table.values():
        assert {"max_softmax", "layer1.reconstruction_error", "layer2.energy"} <= set(scores)
        assert all(0.0 <= v["auroc"] <= 1.0 for v in scores.values())
    assert (out / "anomaly_roc.png").exists()


def test_existing_output_is_refused_without_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    result = CliRunner().invoke(cli, ["robustness", "--out", str(out), *FAST])
    assert result.exit_code != 0
    assert "exists; pass --overwrite to replace it" in result.output
    assert (out / "keep.txt").read_text() == "x"


def test_bad_arguments_give_a_one_line_error(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["robustness", "--n-iter", "0,two", "--out",
                                 str(tmp_path / "a")])
    assert result.exit_code == 2
    assert "--n-iter must be comma-separated integers such as 0,2,5,10; got '0,two'" in \
        result.output
    result = runner.invoke(cli, ["robustness", "--epsilons-l2", "-1", "--out",
                                 str(tmp_path / "b")])
    assert result.exit_code == 2 and "--epsilons-l2 must list at least one finite value" in \
        result.output
    result = runner.invoke(cli, ["robustness", "--run", str(tmp_path / "missing"), "--out",
                                 str(tmp_path / "c")])
    assert result.exit_code == 2 and "config.json is missing" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(cli, ["robustness", "--device", "nowhere", "--out",
                                 str(tmp_path / "d")])
    assert result.exit_code == 2 and "cannot use device 'nowhere'" in result.output
    assert not (tmp_path / "a").exists()
