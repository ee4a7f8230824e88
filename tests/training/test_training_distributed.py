"""Data-parallel training: ``sparsecnn train`` under ``torchrun`` with two
processes (DistributedDataParallel, gloo, localhost) ends with the same weights as one process
with the same global batch, within float64 rounding."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from sparsecnn.training import TrainingConfig, build_model, train


def test_two_process_ddp_matches_one_process(tmp_path: Path) -> None:
    runner = tmp_path / "runner.py"
    runner.write_text("from sparsecnn.cli import main\nmain()\n")
    out = tmp_path / "ddp"
    arguments = ["train", "--epochs", "2", "--channels", "4,8", "--strides", "1,2",
                 "--batch-size", "100", "--dtype", "float64", "--lr", "0.01", "--seed", "3",
                 "--out", str(out), "--no-progress"]
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(runner), *arguments], capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]

    config = TrainingConfig(epochs=2, channels=(4, 8), strides=(1, 2), batch_size=100,
                            dtype="float64", learning_rate=0.01, seed=3)
    single = train(config, None, progress=False)
    distributed = load_file(out / "model.safetensors")
    reference = single.model.state_dict()
    assert distributed.keys() == reference.keys()
    for key, value in reference.items():
        torch.testing.assert_close(distributed[key], value, rtol=1e-10, atol=1e-12)
    # the weights moved away from the shared initialisation
    initial = build_model(config, (1, 8, 8), 10).state_dict()
    assert (distributed["head.weight"] - initial["head.weight"]).abs().max() > 1e-3
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["world_size"] for r in records] == [2, 2]
    assert abs(records[-1]["test_accuracy"] - single.metrics[-1]["test_accuracy"]) < 1e-12
