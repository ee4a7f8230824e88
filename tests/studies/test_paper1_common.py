"""The verdict rules of the paper-1 studies follow from the numbers (never written by hand)."""

from __future__ import annotations

import pytest

from sparsecnn.studies._paper1_common import mean_sd, paired, spread_claim
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
    assert "sd(d)" in claim.rule and claim.measured["difference"]["values"] == values


@pytest.mark.parametrize(("values", "expected"), [
    ([0.004, 0.006, 0.005], "holds"),
    ([-0.004, -0.006, 0.0], "holds"),
    ([0.05, 0.06, 0.055], "does not hold"),
    ([0.0, 0.04, 0.02], "inconclusive"),
])
def test_within_two_points_rule(values: list[float], expected: str) -> None:
    assert _within_claim(mean_sd(values), {}).verdict == expected
