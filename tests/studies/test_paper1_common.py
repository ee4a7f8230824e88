"""The verdict rules of the paper-1 studies follow from the numbers (never written by hand)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from sparsecnn.studies._paper1_common import (
    mean_sd,
    paired,
    paired_t_power,
    seeds_for_power,
    spread_claim,
    tabulate,
)
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


@pytest.mark.parametrize(("n", "standardised_effect", "alternative"), [
    (5, 1.0, "two-sided"), (9, 1.1, "two-sided"), (12, 0.5, "greater"), (3, 2.0, "greater"),
])
def test_paired_t_power_matches_a_monte_carlo_of_scipys_paired_t_test(
        n: int, standardised_effect: float, alternative: str) -> None:
    # the power is what fraction of simulated experiments scipy's paired t-test rejects in
    repeats, sd = 40_000, 0.009
    rng = np.random.default_rng(n)
    treated = rng.normal(0.9, 0.02, size=(repeats, n))
    control = treated - rng.normal(standardised_effect * sd, sd, size=(repeats, n))
    p_values = stats.ttest_rel(treated, control, axis=1, alternative=alternative).pvalue
    simulated = float(np.mean(p_values < 0.05))
    standard_error = math.sqrt(simulated * (1 - simulated) / repeats)
    exact = paired_t_power(n, sd, standardised_effect * sd, alternative=alternative)
    assert abs(exact - simulated) < 4 * standard_error + 1e-3


@pytest.mark.parametrize(("standardised_effect", "expected"), [
    # Cohen's d of the paired differences -> pairs for a two-sided test at alpha 0.05 and power
    # 0.8, as tabulated for the one-sample/paired t-test (e.g. G*Power): d = 0.5 -> 34, 0.8 -> 15
    (0.5, 34), (0.8, 15), (0.2, 199),
])
def test_seeds_for_power_reproduces_the_standard_sample_sizes(
        standardised_effect: float, expected: int) -> None:
    assert seeds_for_power(1.0, standardised_effect) == expected


@settings(max_examples=40, deadline=None)
@given(sd=st.floats(1e-3, 1.0), ratio=st.floats(0.15, 4.0),
       power=st.floats(0.5, 0.95), alternative=st.sampled_from(["two-sided", "greater"]))
def test_seeds_for_power_is_the_smallest_sufficient_n(sd: float, ratio: float, power: float,
                                                      alternative: str) -> None:
    n = seeds_for_power(sd, ratio * sd, power=power, alternative=alternative)
    assert paired_t_power(n, sd, ratio * sd, alternative=alternative) >= power
    if n > 2:
        assert paired_t_power(n - 1, sd, ratio * sd, alternative=alternative) < power
    # Guenther's normal approximation n ~ ((z_a + z_b) / d)^2 + z_a^2 / 2 is within 2 seeds
    z_alpha = stats.norm.ppf(1 - (0.05 / 2 if alternative == "two-sided" else 0.05))
    approximation = ((z_alpha + stats.norm.ppf(power)) / ratio) ** 2 + z_alpha ** 2 / 2
    assert abs(n - max(2.0, approximation)) <= 2


@pytest.mark.parametrize(("arguments", "message"), [
    ({"sd": 0.0, "effect": 0.01}, "sd must be a finite number > 0"),
    ({"sd": 0.01, "effect": -0.01}, "effect must be a finite number > 0"),
    ({"sd": 0.01, "effect": 0.01, "alpha": 1.5}, "alpha must be in"),
    ({"sd": 0.01, "effect": 0.01, "power": 1.0}, "power must be in"),
    ({"sd": 0.01, "effect": 0.01, "alternative": "less"}, "alternative must be one of"),
    ({"sd": 1.0, "effect": 1e-3, "max_n": 100}, "more than max_n=100 seeds"),
])
def test_seeds_for_power_rejects_bad_input(arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        seeds_for_power(**arguments)
    with pytest.raises(ValueError, match="n must be an integer >= 2"):
        paired_t_power(1, 1.0, 1.0)
