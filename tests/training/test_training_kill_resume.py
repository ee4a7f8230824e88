"""Kill and resume: a real training process is killed with SIGKILL at
chosen and at random points, several times, including inside checkpoint and metrics writes,
and resumed each time.  After every kill the latest checkpoint must load (never a damaged one
as the latest); at the end the weights must be bit-identical to an uninterrupted run's, the
metrics complete (one record per epoch, equal to the uninterrupted run's but for wall-clock
seconds) and no temporary file left behind.

Kill points: in the child, ``os.replace`` and ``os.fsync`` (every atomic write of
``sparsecnn.io`` goes through both) are wrapped to take 10 ms, which widens the write windows
for kills at random times, and to SIGKILL the process right after the k-th rename (e.g.
between a checkpoint's rename and the metrics write) or right before the k-th fsync (a
temporary file half-way).  Seeds make the plan of every trial repeatable.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sparsecnn.training import TrainingConfig, latest_checkpoint, load_checkpoint, train

pytestmark = pytest.mark.slow

CONFIG = TrainingConfig(channels=(4,), strides=(2,), epochs=4, batch_size=128)

CHILD = textwrap.dedent("""
    import json, os, signal, sys, time
    out, mode, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    import torch
    torch.set_num_threads({threads})
    from sparsecnn.training import TrainingConfig, train
    calls = {{"replace": 0, "fsync": 0}}

    def hooked(name, original):
        def call(*args, **kwargs):
            time.sleep(0.01)
            calls[name] += 1
            if name == "fsync" and mode == "fsync" and calls[name] == count:
                os.kill(os.getpid(), signal.SIGKILL)
            result = original(*args, **kwargs)
            if name == "replace" and mode == "replace" and calls[name] == count:
                os.kill(os.getpid(), signal.SIGKILL)
            return result
        return call

    os.replace = hooked("replace", os.replace)
    os.fsync = hooked("fsync", os.fsync)
    config = TrainingConfig.from_dict(json.loads({config!r}))
    print("ready", flush=True)
    train(config, out, resume=os.path.isdir(out), progress=False)
""")


def _run_child(script: str, out: Path, mode: str, count: int, delay: float | None) -> int:
    child = subprocess.Popen([sys.executable, "-c", script, str(out), mode, str(count)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        if delay is not None:
            time.sleep(delay)
            child.send_signal(signal.SIGKILL)
        child.wait(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return child.returncode


def _records(file: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in file.read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "run"
    train(CONFIG, out, progress=False)
    return out


def test_killed_and_resumed_run_ends_bit_identical_with_complete_metrics(
        tmp_path: Path, reference: Path) -> None:
    script = CHILD.format(threads=torch.get_num_threads(),
                          config=json.dumps(CONFIG.to_dict()))
    rng = random.Random(0)
    # A process's renames: config.json, metrics.jsonl, then per epoch the checkpoint's three
    # tensor/metrics files, state.json, its manifest, the checkpoint directory (rename 8 + 7j)
    # and metrics.jsonl.  Kill 1 comes
    # right after a checkpoint's rename, before its metrics copy (the case that lost metrics);
    # kill 2 half-way through a file write; kills 3-4 at random times.
    plan = [("replace", 8 + 7 * rng.randint(0, 1), None), ("fsync", rng.randint(2, 12), None),
            ("none", 0, rng.uniform(0.05, 1.0)), ("none", 0, rng.uniform(0.05, 1.0))]
    out = tmp_path / "run"
    kills = 0
    for mode, count, delay in plan:
        code = _run_child(script, out, mode, count, delay)
        assert code in (0, -signal.SIGKILL), code
        if code == 0:
            break
        kills += 1
        latest = latest_checkpoint(out)
        if latest is not None:
            load_checkpoint(latest)  # raises if the latest checkpoint is damaged
        if mode == "replace":
            # the checkpoint is in place, its metrics copy is not: the log lags one epoch
            assert len(_records(out / "metrics.jsonl")) == int(latest.name[6:]) - 1
    else:
        assert _run_child(script, out, "none", 0, None) == 0
    assert kills >= 2  # the deterministic kill points lie inside a 4-epoch run

    final, expected = load_file(out / "model.safetensors"), load_file(
        reference / "model.safetensors")
    assert final.keys() == expected.keys()
    assert all(torch.equal(final[key], expected[key]) for key in final)
    assert [r["epoch"] for r in _records(out / "metrics.jsonl")] == [1, 2, 3, 4]
    assert _records(out / "metrics.jsonl") == _records(reference / "metrics.jsonl")
    leftovers = [p for p in out.rglob("*") if p.name.endswith((".tmp", ".old"))]
    assert leftovers == []
