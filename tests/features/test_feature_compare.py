"""Check 22 tooling: trained-vs-constructed metrics, and the ``construct`` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sparsecnn.cli import cli
from sparsecnn.features import FeatureWorld, compare, construct, preset
from sparsecnn.features.compare import _binarity, _filter_similarity, network_metrics


@pytest.fixture(scope="module")
def world() -> FeatureWorld:
    return preset("default")


def test_constructed_network_scores_the_theory_values(world: FeatureWorld) -> None:
    """docs/theory.md check 22: the constructed network has filter cosine 1.0, 100 % binary hidden
    units, perfect accuracy and localization."""
    test = world.sample(300, seed=5)
    metrics, _ = network_metrics(construct(world), world, test)
    assert metrics.accuracy == 1.0
    assert np.allclose(metrics.filter_similarity, 1.0, atol=1e-12)
    assert metrics.binarity == 1.0
    assert metrics.localization_exact == 1.0


def test_filter_similarity_matches_numpy_cosines(world: FeatureWorld) -> None:
    network = construct(world)
    first = network.detector[0]
    rng = np.random.default_rng(0)
    weights = rng.normal(size=first.weight.shape)
    with torch.no_grad():
        first.weight.copy_(torch.tensor(weights))
    similarity, _ = _filter_similarity(network, world.templates)
    filters = weights[:, 0].reshape(len(weights), -1)
    for j, template in enumerate(world.templates):
        kernel = (2 * template - 1).ravel()
        cosines = filters @ kernel / (np.linalg.norm(filters, axis=1) * np.linalg.norm(kernel))
        assert similarity[j] == pytest.approx(cosines.max(), abs=1e-12)


def test_binarity_counts_zero_and_near_one_after_rescaling() -> None:
    maps = torch.tensor([0.0, 2.0, 1.9, 1.0, -2.0, 0.5]).reshape(1, 1, 2, 3)
    # scale 2: 0, 1, 0.95, 0.5, -1, 0.25 -> inside: 0, 1, 0.95
    assert _binarity([maps]) == pytest.approx(3 / 6)


def test_compare_runs_and_reports(world: FeatureWorld) -> None:
    result = compare(world, train_sizes=(40, 80), seeds=(0,), steps=8, test_size=60,
                     batch_size=16)
    assert [r.train_size for r in result.runs] == [40, 80]
    for run in result.runs:
        assert 0 <= run.accuracy <= 1
        assert all(-1 - 1e-9 <= s <= 1 + 1e-9 for s in run.filter_similarity)
        assert 0 <= run.binarity <= 1
        assert 0 <= run.localization_exact <= run.localization_within_one <= 1
    # the kept networks are the ones measured: same test accuracy on the same test set
    assert set(result.networks) == {(40, 0), (80, 0)}
    test = world.sample(60, seed=999)
    for run in result.runs:
        with torch.no_grad():
            predictions = result.networks[(run.train_size, run.seed)](test.images).argmax(1)
        assert float((predictions == test.labels).float().mean()) == run.accuracy
    summary = result.to_dict()["summary"]
    assert set(summary["by_train_size"]) == {"40", "80"}
    assert result.accuracy_table().shape == (2, 1)
    json.dumps(result.to_dict())
    with pytest.raises(ValueError, match="train_sizes must be positive integers"):
        compare(world, train_sizes=(0,))


def test_construct_command(tmp_path: Path) -> None:
    out = tmp_path / "construct"
    result = CliRunner().invoke(cli, ["construct", "--n", "60", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "construct.json").read_text())
    assert report["certificate"]["error_rate"] == 0.0
    assert report["certificate"]["min_margin"] >= 1 - 1e-9
    assert report["smallest_breaking_attack"] >= report["certificate"]["radius"]
    for name in ("network.safetensors", "margins.png", "filters.png", "detection_maps.png"):
        assert (out / name).stat().st_size > 0
    again = CliRunner().invoke(cli, ["construct", "--n", "10", "--out", str(out)])
    assert again.exit_code != 0 and "pass --overwrite" in again.output
