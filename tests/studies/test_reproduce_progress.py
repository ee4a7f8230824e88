"""``sparsecnn reproduce``: the help lists the discovered studies, and the progress bar advances
by each study's declared cost, so its ETA weighs what is left by cost."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
from click.testing import CliRunner

import sparsecnn.studies
from sparsecnn.cli import cli
from sparsecnn.report.study import Study, StudyOutput
from sparsecnn.studies import discover_studies, reproduce_run


def _empty(context) -> StudyOutput:
    return StudyOutput()


def test_help_lists_the_discovered_study_names(monkeypatch) -> None:
    real = CliRunner().invoke(cli, ["reproduce", "--help"])
    assert real.exit_code == 0
    for study in discover_studies():
        assert study.name in real.output
    # the list comes from discovery, not from a list written into the command
    monkeypatch.setattr(sparsecnn.studies, "discover_studies",
                        lambda: [Study("a_study_added_later", 1, "Added later", _empty)])
    added = CliRunner().invoke(cli, ["reproduce", "--help"])
    assert "a_study_added_later" in added.output and "paper1_identities" not in added.output


class RecordingBar:
    """Stands in for tqdm: records the total and every update."""

    instances: ClassVar[list[RecordingBar]] = []

    def __init__(self, iterable=None, total=None, **kwargs) -> None:
        self.total, self.updates = total, []
        RecordingBar.instances.append(self)

    def update(self, n: float) -> None:
        self.updates.append(n)

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.parametrize(("quick", "expected"), [(True, [2.0, 30.0]), (False, [8.0, 120.0])])
def test_bar_advances_by_declared_cost(tmp_path: Path, monkeypatch, quick: bool,
                                       expected: list[float]) -> None:
    studies = [Study("cheap", 1, "Cheap", _empty, cost=(2, 8)),
               Study("dear", 2, "Dear", _empty, cost=(30, 120))]
    monkeypatch.setattr(reproduce_run, "discover_studies", lambda: studies)
    monkeypatch.setattr(reproduce_run, "tqdm", RecordingBar)
    RecordingBar.instances.clear()
    reproduce_run.run_reproduce(tmp_path / "run", quick=quick)
    bar = RecordingBar.instances[0]
    assert bar.total == sum(expected) and bar.updates == expected


@pytest.mark.parametrize("cost", [(0, 1), (1,), (1, float("nan")), (True, 2), ("1", 2)])
def test_bad_cost_is_refused(cost) -> None:
    with pytest.raises(ValueError, match="cost must be \\(quick, full\\) expected seconds"):
        Study("bad", 1, "Bad", _empty, cost=cost)


def test_every_registered_study_declares_its_cost() -> None:
    # the default cost would make the ETA a guess; every real study states its own
    assert all(study.cost != Study("x", 1, "x", _empty).cost for study in discover_studies())
