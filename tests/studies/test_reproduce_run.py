"""``sparsecnn reproduce`` (:mod:`sparsecnn.studies.reproduce_run`): results.json schema, report
page, overwrite refusal, failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from helpers import quick_study_run

from sparsecnn.cli import cli
from sparsecnn.report.study import Study, StudyOutput
from sparsecnn.studies import discover_studies, reproduce_run

VERDICTS = {"holds", "does not hold", "inconclusive"}


@pytest.fixture(scope="module")
def identities_run(tmp_path_factory) -> Path:
    return quick_study_run(tmp_path_factory.mktemp("runs"), "paper1_identities", seed=3)


def test_results_json_has_claims_with_computed_verdicts(identities_run: Path) -> None:
    results = json.loads((identities_run / "results.json").read_text())
    assert results["meta"]["seed"] == 3 and results["meta"]["quick"] is True
    claims = results["claims"]
    assert len(claims) >= 10
    for claim in claims:
        assert set(claim) >= {"id", "paper", "statement", "measured", "verdict", "rule"}
        assert claim["paper"] in (1, 2) and claim["verdict"] in VERDICTS
    # Exact identities: every one must hold, and its number must agree with its verdict.
    for claim in claims:
        measured = claim["measured"]
        if "max_abs_error" in measured:
            assert claim["verdict"] == ("holds" if measured["max_abs_error"] <=
                                        measured["tolerance"] else "does not hold")
    assert all(c["verdict"] == "holds" for c in claims)


def test_results_json_groups_claims_and_records_the_run(identities_run: Path) -> None:
    results = json.loads((identities_run / "results.json").read_text())
    claims = results["claims"]
    assert all({"kind", "reason", "measurements", "smoke_test"} <= set(c) for c in claims)
    # the identities study checks exact statements only: all in the identity group
    assert results["claim_groups"] == {"identity": [c["id"] for c in claims], "empirical": []}
    meta = results["meta"]
    assert meta["verdict_scope"].startswith("smoke test only") and meta["data"] == "digits"
    assert all(c["smoke_test"] is True for c in claims)
    assert set(meta["packages"]) == {"sparsecnn", "torch", "numpy", "scipy", "scikit-learn"}
    assert meta["machine"]["cpu_count"] >= 1 and meta["git_commit"]
    assert meta["claims_without_reason"] == []
    page = (identities_run / "report.html").read_text()
    assert "Smoke test only" in page and "Verified identities" in page


def test_report_page_is_self_contained(identities_run: Path) -> None:
    page = (identities_run / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "<h2>Summary</h2>" in page and "P1-A2-soft-threshold" in page
    assert "data:image/png;base64," in page
    assert "http://" not in page and "https://" not in page  # nothing fetched when viewed
    assert (identities_run / "figures" / "paper1_convergence.png").stat().st_size > 1000


def test_existing_output_needs_overwrite(identities_run: Path) -> None:
    result = CliRunner().invoke(cli, ["reproduce", "--quick", "--only", "paper1_identities",
                                      "--out", str(identities_run)])
    assert result.exit_code == 2
    assert "exists; pass --overwrite to replace it" in result.output
    assert "Traceback" not in result.output


def test_unknown_study_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["reproduce", "--only", "nope", "--out",
                                      str(tmp_path / "x")])
    assert result.exit_code == 2 and "only names unknown studies ['nope']" in result.output
    assert not (tmp_path / "x").exists()


def test_failed_study_is_reported_and_others_run(tmp_path: Path, monkeypatch) -> None:
    def broken(context):
        raise RuntimeError("deliberate failure")

    def fine(context):
        return StudyOutput(summary="fine study")

    studies = [Study("broken", 1, "Broken study", broken), Study("fine", 2, "Fine study", fine)]
    monkeypatch.setattr(reproduce_run, "discover_studies", lambda: studies)
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["reproduce", "--quick", "--out", str(out)])
    assert result.exit_code == 1
    results = json.loads((out / "results.json").read_text())
    assert results["studies"]["broken"]["status"] == "failed"
    assert "deliberate failure" in results["studies"]["broken"]["error"]
    assert results["studies"]["fine"]["status"] == "ok"
    assert "deliberate failure" in (out / "report.html").read_text()


def test_interrupted_run_leaves_no_report(tmp_path: Path, monkeypatch) -> None:
    def interrupted(context):
        raise KeyboardInterrupt

    monkeypatch.setattr(reproduce_run, "discover_studies",
                        lambda: [Study("interrupted", 1, "Interrupted", interrupted)])
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        reproduce_run.run_reproduce(out, quick=True)
    assert not out.exists()
    # only the unit store is left, for a resumed run; no staging directory, no report
    assert [p.name for p in tmp_path.iterdir()] == ["run.units"]
    assert [p.name for p in (tmp_path / "run.units").iterdir()] == ["fingerprint.json"]


def test_every_study_module_is_discovered() -> None:
    names = {s.name for s in discover_studies()}
    assert "paper1_identities" in names


def test_study_threads_are_applied_and_restored(tmp_path: Path, monkeypatch) -> None:
    seen = []

    def record(context):
        seen.append(torch.get_num_threads())
        return StudyOutput()

    monkeypatch.setattr(reproduce_run, "discover_studies",
                        lambda: [Study("one", 1, "One thread", record, threads=1)])
    before = torch.get_num_threads()
    reproduce_run.run_reproduce(tmp_path / "run", quick=True)
    assert seen == [1] and torch.get_num_threads() == before


@pytest.mark.slow
def test_every_unestablished_finding_of_a_quick_run_says_why(tmp_path: Path) -> None:
    reproduce_run.run_reproduce(tmp_path / "run", quick=True)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    unexplained = [c["id"] for c in results["claims"]
                   if c["kind"] == "empirical" and c["verdict"] != "holds" and not c["reason"]]
    assert unexplained == [] and results["meta"]["claims_without_reason"] == []
    # both groups are populated: the identities are not mixed into the findings
    assert results["claim_groups"]["identity"] and results["claim_groups"]["empirical"]
    assert "no reason given" not in (tmp_path / "run" / "report.html").read_text()
