"""The report page (:mod:`sparsecnn.report.html`) groups claims by kind, says why a finding is
not established (and flags one that does not), tabulates measurements once, places claims and
figures under their paper, and marks a quick run as a smoke test."""

from __future__ import annotations

import re

import pytest

from sparsecnn.report.html import MISSING_REASON, claims_missing_reason, render_report
from sparsecnn.report.study import (
    Claim,
    Figure,
    LiteratureRow,
    Measurement,
    Study,
    StudyOutput,
)

ROW = Measurement.from_values("accuracy", [0.9, 0.92, 0.94], "fraction")


def _output() -> StudyOutput:
    return StudyOutput(claims=[
        Claim("P1-identity", 1, "softmax sums to one", {"error": 0.0}, "error <= 1e-12", "holds",
              kind="identity"),
        Claim("P1-found", 1, "k-step is more robust", {"epochs": 3}, "d >= sd", "inconclusive",
              reason="the band [-0.8, 1.2] straddles 0", measurements=[ROW]),
        Claim("P1-silent", 1, "proper priors help", {}, "d >= sd", "does not hold",
              measurements=[ROW]),
        Claim("P2-from-paper1-study", 2, "constructed beats trained", {}, "d >= sd", "holds"),
    ], figures=[Figure("own", "paper-1 figure", b"\x89PNG"),
                Figure("other", "paper-2 figure", b"\x89PNG", paper=2)],
        literature=[LiteratureRow("P1-found", "Sulam et al. 2020, TPAMI 42(8)", "MNIST",
                                  "unfolding helps", "T=6 vs T=0: +0.1")])


def _page(quick: bool) -> str:
    study = Study(name="mixed", paper=1, title="A paper-1 study", run=lambda context: None)
    return render_report({"name": "t", "quick": quick, "seed": 0, "git_commit": "abc"},
                         [study], {"mixed": _output()}, {})


def _section(page: str, title: str) -> str:
    start = page.index(f"<h2>{title}")
    end = page.find("<h2>", start + 1)
    return page[start:end]


def test_identities_are_a_group_of_their_own() -> None:
    page = _page(quick=False)
    summary = _section(page, "Summary")
    empirical, identities = summary.split("<h3>Verified identities")
    assert "P1-identity" in identities and "P1-identity" not in empirical
    assert all(claim in empirical for claim in ("P1-found", "P1-silent"))


def test_reasons_are_shown_and_a_missing_one_is_flagged() -> None:
    page = _page(quick=False)
    assert "the band [-0.8, 1.2] straddles 0" in page
    assert claims_missing_reason({"mixed": _output()}) == ["P1-silent"]
    assert MISSING_REASON in page and "1 empirical claim(s) without a reason: P1-silent" in page


def test_a_measurement_shared_by_claims_is_one_row() -> None:
    page = _section(_page(quick=False), "Paper 1")
    tables = re.findall(r"<table class='measurements'>.*?</table>", page)
    assert len(tables) == 1 and tables[0].count("<code>accuracy</code>") == 1
    assert "P1-found, P1-silent" in tables[0]
    assert f"[{ROW.low:.4g}, {ROW.high:.4g}]" in tables[0]


def test_claims_and_figures_sit_under_their_paper() -> None:
    page = _page(quick=False)
    paper1, paper2 = _section(page, "Paper 1"), _section(page, "Paper 2")
    assert "id='P2-from-paper1-study'" in paper2 and "P2-from-paper1-study" not in paper1
    assert "paper-2 figure" in paper2 and "paper-2 figure" not in paper1
    assert "paper-1 figure" in paper1
    assert "Sulam et al. 2020" in paper1 and "Sulam et al. 2020" not in paper2


@pytest.mark.parametrize("quick", [True, False])
def test_quick_verdicts_are_marked_smoke_tests(quick: bool) -> None:
    page = _page(quick=quick)
    assert ("Smoke test only" in page) is quick
    assert ("inconclusive (smoke test)" in page) is quick
    # identities are exact in any mode: never marked
    assert "holds (smoke test)</span></td><td title='softmax" not in page
