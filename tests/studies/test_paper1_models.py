"""Check 23 of the paper-1 models study: the declared verdict rule, convergence check and power
analysis follow from the numbers (intervals from SciPy, not from the code under test)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from scipy import stats

from sparsecnn.cli import cli
from sparsecnn.data import DatasetSplit
from sparsecnn.studies import _paper1_unfolding as unfolding
from sparsecnn.studies import paper1_models
from sparsecnn.studies._paper1_unfolding import (
    SMALLEST_EFFECT,
    UnfoldBudget,
    converged,
    seeds_needed,
    unfold_verdict,
)


def _interval(values: list[float]) -> tuple[float, float]:
    return stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))


@pytest.mark.parametrize(("values", "expected", "phrase"), [
    ([0.020, 0.025, 0.030, 0.022, 0.028], "holds", ""),
    # a null effect at convergence: interval inside +-0.01
    ([-0.002, 0.001, 0.0, 0.002, -0.001, 0.0], "does not hold", "No difference at convergence"),
    ([-0.030, -0.025, -0.035, -0.028, -0.032], "does not hold", "Unfolding is worse"),
    ([-0.02, 0.03, 0.0, 0.01, -0.01], "inconclusive", "contains both 0 and"),
])
def test_unfold_verdict_follows_the_t_interval(values: list[float], expected: str,
                                               phrase: str) -> None:
    low, high = _interval(values)
    # the cases really are of the kind named (so the test cannot pass by accident)
    assert {"holds": low > 0, "does not hold": high < SMALLEST_EFFECT and low <= 0,
            "inconclusive": low <= 0 <= SMALLEST_EFFECT <= high}[expected]
    verdict, reason = unfold_verdict(values, n_needed=len(values), setup_problems=[])
    assert verdict == expected
    assert (reason == "") == (expected == "holds") and phrase in reason
    if expected == "does not hold":
        assert f"[{low:+.4f}, {high:+.4f}]" in reason


def test_an_underpowered_straddling_interval_says_how_many_seeds_were_needed() -> None:
    verdict, reason = unfold_verdict([-0.02, 0.03, 0.0], n_needed=9, setup_problems=[])
    assert verdict == "inconclusive"
    assert "Underpowered: n needed = 9" in reason and "n run = 3" in reason


def test_a_broken_setup_makes_the_claim_inconclusive_with_its_name() -> None:
    # even a decisive interval is not judged when a network did not converge
    verdict, reason = unfold_verdict([0.02, 0.025, 0.03], n_needed=3,
                                     setup_problems=["the T6 network is not converged"])
    assert verdict == "inconclusive" and "T6 network is not converged" in reason


@pytest.mark.parametrize(("late", "expected"), [(0.96, True), (0.94, False), (1.3, True)])
def test_convergence_is_a_relative_held_out_loss_plateau(late: float, expected: bool) -> None:
    # held-out loss 1.0 at 3/4 of 8 epochs, `late` at the end (mean over two seeds)
    runs = [{"T0_heldout_loss": {2: 2.0, 4: 1.5, 6: 1.0 + s, 8: late + s}} for s in (-0.1, 0.1)]
    check = converged(runs, "T0", 8)
    assert check["relative_fall"] == pytest.approx(1.0 - late)
    assert check["converged"] is expected


@pytest.mark.parametrize(("pilot", "expected"), [
    # sd 0.009 -> standardised effect 1.11: 9 pairs for a two-sided paired t-test at alpha 0.05
    # and power 0.8 (the one-sample t tables, e.g. G*Power, give 9 for d = 1.1)
    ([0.0, 0.009 * 2 ** 0.5], 9),
    # identical pilot differences: the sd is floored at one test image (1/900), d = 9; two pairs
    # are not enough (df = 1: t_0.975 = 12.7 = the noncentrality 9 sqrt(2), power ~0.5), three are
    ([0.01, 0.01, 0.01], 3),
])
def test_seeds_needed_from_the_pilot_sd(pilot: list[float], expected: int) -> None:
    assert seeds_needed(pilot, 900) == expected


def test_hold_out_is_a_disjoint_seeded_partition_of_the_training_split() -> None:
    images = torch.arange(50, dtype=torch.float32).reshape(50, 1, 1, 1)
    data = DatasetSplit("toy", images, torch.arange(50) % 3, images[:5], torch.zeros(5).long(), 3)
    first, again = unfolding._hold_out(data, 4), unfolding._hold_out(data, 4)
    kept = set(first.train_images.flatten().tolist())
    held = set(first.test_images.flatten().tolist())
    assert len(held) == 10 and not kept & held and kept | held == set(range(50))
    assert torch.equal(first.test_images, again.test_images)  # the seed decides the cut


@pytest.mark.parametrize(("arguments", "message"), [
    ({"epochs": 6}, "epochs must be a multiple of 4"),
    ({"pilot": 1}, "need 2 <= pilot <= max_seeds"),
    ({"pilot": 4, "max_seeds": 3}, "need 2 <= pilot <= max_seeds"),
])
def test_unfold_budget_rejects_bad_settings(arguments: dict, message: str) -> None:
    settings = {"channels": (4,), "epochs": 4, "batch": 64, "learning_rate": 1e-2, "pilot": 2,
                "max_seeds": 3, **arguments}
    with pytest.raises(ValueError, match=message):
        UnfoldBudget(**settings)


@pytest.mark.slow
def test_study_runs_the_power_analysis_seed_count_and_judges_by_the_rule(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a tiny budget: the wiring (pilot -> seeds needed -> seeds run -> verdict) is under test
    tiny = paper1_models.Budget(seeds=2, complete_channels=(4, 4), complete_epochs=1,
                                unfold=UnfoldBudget(channels=(4, 4), epochs=4, batch=256,
                                                    learning_rate=1e-2, pilot=2, max_seeds=3))
    monkeypatch.setattr(paper1_models, "QUICK", tiny)
    out = tmp_path / "models"
    result = CliRunner().invoke(cli, ["reproduce", "--quick", "--only", "paper1_models",
                                      "--out", str(out), "--seed", "0"])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    (claim,) = [c for c in results["claims"] if c["id"] == "P1-check23-ml-ista"]
    measured = claim["measured"]
    assert measured["seeds_run"] == min(max(2, measured["seeds_needed"]), 3)
    (difference,) = [m for m in claim["measurements"] if m["name"] == "difference"]
    assert difference["n"] == measured["seeds_run"]
    low, high = difference["ci95"]
    problems = [k for k, v in measured.items()
                if k.endswith("relative_fall_last_quarter") and v >= 0.05]
    expected = ("inconclusive" if problems else "holds" if low > 0 else
                "does not hold" if high < SMALLEST_EFFECT else "inconclusive")
    assert claim["verdict"] == expected
    assert (claim["reason"] == "") == (expected == "holds")
