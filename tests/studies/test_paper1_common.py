"""The verdict rules of the paper-1 studies follow from the numbers (never written by hand)."""

from __future__ import annotations

import pytest
from scipy import stats

from sparsecnn.studies._paper1_common import mean_sd, paired, spread_claim, tabulate
from sparsecnn.studies.paper1_features import _within_claim


def test_mean_sd_and_paired_differences() -> None:
    stats = mean_sd([1.0, 2.0, 3.0, 6.0])
    assert stats["mean"] == 3.0
    assert stats["sd"] == pytest.approx((14 / 3) ** 0.5)  # sample sd, ddof = 1
    assert mean_sd([0.7])["sd"] == 0.0
    assert paired([0.9, 0.8], [0.5, 0.6])["mean"] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="non-empty list of finite numbers"):
        mean_sd([float("nan")])


@pytest.mark.parametrize(("values", "margin", "expected"), [
    ([0.02, 0.03, 0.025], 0.0, "holds"),
    ([-0.02, -0.03, -0.025], 0.0, "does not hold"),
    ([-0.02, 0.03, 0.0], 0.0, "inconclusive"),
    ([-0.01, -0.012, -0.011], 0.02, "holds"),  # within the 2-point margin
    ([-0.05, -0.04, -0.045], 0.02, "does not hold"),
])
def test_spread_claim_verdicts(values: list[float], margin: float, expected: str) -> None:
    claim = spread_claim("id", "statement", mean_sd(values), "a - b", {}, margin=margin)
    assert claim.verdict == expected
    assert "sd(d)" in claim.rule and claim.measured["margin"] == margin
    (difference,) = [m for m in claim.measurements if m.name == "difference"]
    low, high = stats.t.interval(0.95, len(values) - 1, loc=stats.tmean(values),
                                 scale=stats.sem(values))
    assert (difference.low, difference.high) == (pytest.approx(low), pytest.approx(high))
    # a claim that is not established says why, with its numbers; one that holds needs no reason
    assert (claim.reason == "") == (expected == "holds")
    if expected != "holds":
        assert f"{stats.tmean(values):+.3g}" in claim.reason and "3 seed" in claim.reason
        assert claim.needs_reason


def test_tabulate_moves_seed_statistics_into_rows_and_keeps_settings() -> None:
    split = tabulate({"accuracy": mean_sd([0.9, 0.8]), "epochs": 3,
                      "per_set": {"noise": mean_sd([0.6, 0.7]), "blank": mean_sd([0.5])}},
                     {"accuracy": "fraction"})
    assert split["measured"] == {"epochs": 3}
    rows = {m.name: m for m in split["measurements"]}
    assert set(rows) == {"accuracy", "per_set.noise", "per_set.blank"}
    assert rows["accuracy"].unit == "fraction" and rows["accuracy"].mean == pytest.approx(0.85)
    assert rows["per_set.blank"].n == 1 and rows["per_set.blank"].low is None


@pytest.mark.parametrize(("values", "expected"), [
    ([0.004, 0.006, 0.005], "holds"),
    ([-0.004, -0.006, 0.0], "holds"),
    ([0.05, 0.06, 0.055], "does not hold"),
    ([0.0, 0.04, 0.02], "inconclusive"),
])
def test_within_two_points_rule(values: list[float], expected: str) -> None:
    claim = _within_claim(mean_sd(values), {})
    assert claim.verdict == expected
    assert (claim.reason == "") == (expected == "holds")
