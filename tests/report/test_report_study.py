"""The study contract of :mod:`sparsecnn.report`: verdicts are computed, never written by hand,
and the package is a leaf below the studies."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import sparsecnn.report
from sparsecnn.report.study import Claim, Figure, Measurement, verdict, verdict_with_spread


def test_verdict_maps_pass_fail_unknown() -> None:
    assert (verdict(True), verdict(False), verdict(None)) == \
        ("holds", "does not hold", "inconclusive")


@pytest.mark.parametrize(("mean", "sd", "margin", "expected"), [
    (0.3, 0.1, 0.0, "holds"), (-0.3, 0.1, 0.0, "does not hold"), (0.05, 0.1, 0.0, "inconclusive"),
    (-0.01, 0.0, 0.02, "holds"), (0.0, 0.0, 0.0, "holds"),
])
def test_verdict_with_spread(mean: float, sd: float, margin: float, expected: str) -> None:
    assert verdict_with_spread(mean, sd, margin=margin) == expected


@pytest.mark.parametrize(("mean", "sd", "n", "expected"), [
    # two seeds: t_0.975,1 = 12.71, the interval is 8.98 sd wide on each side
    (0.3, 0.1, 2, "inconclusive"), (0.9, 0.1, 2, "holds"), (-0.9, 0.1, 2, "does not hold"),
    # ten seeds: the half-width 0.715 sd is inside one sd, so the one-sd band decides
    (0.1, 0.1, 10, "holds"), (0.09, 0.1, 10, "inconclusive"),
])
def test_verdict_with_spread_needs_the_interval_with_few_seeds(mean: float, sd: float, n: int,
                                                               expected: str) -> None:
    assert verdict_with_spread(mean, sd, n=n) == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-1, 1, allow_nan=False), min_size=2, max_size=12),
       st.floats(-0.5, 0.5, allow_nan=False))
def test_a_settled_spread_verdict_is_a_significant_paired_t_test(values: list[float],
                                                                 margin: float) -> None:
    # "holds" / "does not hold" must mean the two-sided one-sample t-test of mean(d) + margin
    # = 0 rejects at 5 % (scipy, independently) and the mean is beyond one sd
    array = np.asarray(values) + margin
    mean, sd = float(np.mean(values)), float(np.std(values, ddof=1))
    verdict_ = verdict_with_spread(mean, sd, margin=margin, n=len(values))
    if verdict_ != "inconclusive" and sd > 1e-9:
        assert stats.ttest_1samp(array, 0.0).pvalue <= 0.05 + 1e-9
        assert abs(mean + margin) >= sd - 1e-12
        assert (mean + margin > 0) == (verdict_ == "holds")


def test_claim_refuses_an_unknown_verdict_or_paper() -> None:
    with pytest.raises(ValueError, match="verdict must be one of"):
        Claim("id", 1, "statement", {}, "rule", "probably")
    with pytest.raises(ValueError, match="paper must be 1 or 2"):
        Claim("id", 3, "statement", {}, "rule", "holds")


def test_report_imports_no_study_and_no_command() -> None:
    # report/ is the leaf the studies build on; an import of studies/ or commands/ from here
    # would make the two packages depend on each other again.
    package = Path(sparsecnn.report.__file__).parent
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                names = [f"{module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                assert not any(part in ("studies", "commands", "cli")
                               for part in name.split(".")), (path.name, name)


@pytest.mark.parametrize("values", [[0.91, 0.93, 0.9, 0.95, 0.92], [1.0, 3.0], [-2.5, 0.0, 7.0]])
def test_measurement_interval_is_scipys_student_t_interval(values: list[float]) -> None:
    row = Measurement.from_values("x", values, "fraction")
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values),
                                 scale=stats.sem(values))
    assert (row.low, row.high) == (pytest.approx(low), pytest.approx(high))
    assert row.sd == pytest.approx(np.std(values, ddof=1)) and row.n == len(values)
    assert row.to_dict()["ci95"] == [row.low, row.high]


@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=2, max_size=12),
       st.floats(-1e3, 1e3, allow_nan=False))
def test_measurement_interval_contains_the_mean_and_moves_with_a_shift(values: list[float],
                                                                       shift: float) -> None:
    row = Measurement.from_values("x", values)
    moved = Measurement.from_values("x", [v + shift for v in values])
    assert row.low <= row.mean <= row.high
    tolerance = 1e-9 * (1 + max(abs(v) for v in values) + abs(shift))
    assert moved.low - row.low == pytest.approx(shift, abs=tolerance)
    assert moved.high - moved.low == pytest.approx(row.high - row.low, abs=tolerance)


def test_one_value_has_no_interval_and_bad_values_are_refused() -> None:
    row = Measurement.from_values("accuracy", [0.7])
    assert (row.mean, row.n, row.low, row.high) == (0.7, 1, None, None)
    assert row.to_dict()["ci95"] is None
    with pytest.raises(ValueError, match="'accuracy' must be a non-empty sequence of finite"):
        Measurement.from_values("accuracy", [0.5, float("inf")])
    with pytest.raises(ValueError, match="non-empty"):
        Measurement.from_values("accuracy", [])


@pytest.mark.parametrize(("kind", "verdict_text", "needs"), [
    ("empirical", "holds", False), ("empirical", "does not hold", True),
    ("empirical", "inconclusive", True), ("identity", "does not hold", False),
])
def test_which_claims_need_a_reason(kind: str, verdict_text: str, needs: bool) -> None:
    claim = Claim("id", 1, "statement", {}, "rule", verdict_text, kind=kind)
    assert claim.needs_reason is needs
    assert claim.to_dict()["kind"] == kind and claim.to_dict()["reason"] == ""


def test_figure_refuses_an_unknown_paper() -> None:
    with pytest.raises(ValueError, match="paper must be None"):
        Figure("name", "caption", b"", paper=3)


def test_claim_refuses_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        Claim("id", 1, "statement", {}, "rule", "holds", kind="theorem")
