"""A reproduce run resumes from its finished units, and shards plus a merge give the report of
one run (results.json equal apart from timing and metadata)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from sparsecnn.cli import cli
from sparsecnn.report.study import Claim, Study, StudyContext, StudyOutput
from sparsecnn.studies import reproduce_run

CALLS: list[str] = []


def _seed_unit(study: str, seed: int) -> dict:
    CALLS.append(f"{study}/seed{seed}")
    generator = torch.Generator().manual_seed(seed)
    return {"mean": float(torch.randn(100, generator=generator).mean()),
            "draws": torch.rand(3, generator=generator), "seed": seed}


def _fake(context: StudyContext, study: str, *, fail_at: int | None = None) -> StudyOutput:
    units = []
    for seed in range(context.seed, context.seed + 5):
        if seed == fail_at:
            raise KeyboardInterrupt
        units.append(context.unit(f"seed{seed}", lambda seed=seed: _seed_unit(study, seed)))
    # a data-dependent follow-up, like check 23's extra seeds after a power analysis
    extra = 2 if sum(u["mean"] for u in units) > 0 else 1
    units += [context.unit(f"extra{k}", lambda k=k: _seed_unit(study, 100 + k))
              for k in range(extra)]
    mean = sum(u["mean"] for u in units) / len(units)
    return StudyOutput(claims=[Claim(id="fake", paper=1, statement="fake", rule="mean > -1",
                                     measured={"mean": mean}, verdict="holds")],
                       results={"means": [u["mean"] for u in units],
                                "draws": [u["draws"].tolist() for u in units]})


def _studies(fail_at: int | None = None) -> list[Study]:
    return [Study("fake_a", 1, "Fake A", lambda c: _fake(c, "a", fail_at=fail_at)),
            Study("fake_b", 1, "Fake B", lambda c: _fake(c, "b"), order=200),
            Study("whole", 2, "No units", lambda c: StudyOutput(results={"x": 1}),
                  has_units=False)]


def _results(out: Path) -> dict:
    results = json.loads((out / "results.json").read_text())
    results.pop("meta")
    for study in results["studies"].values():
        study.pop("seconds")
    return results


@pytest.fixture
def fake_studies(monkeypatch):
    holder = {"studies": _studies()}
    monkeypatch.setattr(reproduce_run, "discover_studies", lambda: holder["studies"])
    CALLS.clear()
    return holder


def test_an_interrupted_run_resumes_from_its_units(tmp_path: Path, fake_studies) -> None:
    reproduce_run.run_reproduce(tmp_path / "reference", quick=True)
    reference_calls = len(CALLS)
    CALLS.clear()
    fake_studies["studies"] = _studies(fail_at=3)
    with pytest.raises(KeyboardInterrupt):
        reproduce_run.run_reproduce(tmp_path / "run", quick=True)
    assert CALLS == ["a/seed0", "a/seed1", "a/seed2"]
    assert sorted(p.name for p in (tmp_path / "run.units" / "fake_a").iterdir()) == \
        ["seed0.json", "seed1.json", "seed2.json"]
    CALLS.clear()
    fake_studies["studies"] = _studies()
    summary = reproduce_run.run_reproduce(tmp_path / "run", quick=True)
    assert "a/seed0" not in CALLS and len(CALLS) == reference_calls - 3
    assert summary.units_loaded == 3
    assert _results(tmp_path / "run") == _results(tmp_path / "reference")
    assert not (tmp_path / "run.units").exists()


@pytest.mark.parametrize("n_shards", [2, 3])
def test_shards_and_merge_give_the_one_run_report(tmp_path: Path, fake_studies,
                                                  n_shards: int) -> None:
    reproduce_run.run_reproduce(tmp_path / "one", quick=True)
    single_calls = sorted(CALLS)
    CALLS.clear()
    for index in range(n_shards):
        summary = reproduce_run.run_reproduce(tmp_path / f"shard{index}", quick=True,
                                              shard=(index, n_shards))
        assert summary.n_claims == 0 and not summary.failed
        assert not (tmp_path / f"shard{index}" / "report.html").exists()
    shard_calls = list(CALLS)
    assert len(shard_calls) == len(set(shard_calls))  # no unit computed by two shards
    reproduce_run.run_reproduce(tmp_path / "merged", quick=True,
                                merge=[tmp_path / f"shard{i}" for i in range(n_shards)])
    assert sorted(CALLS) == single_calls  # the merge computed only what no shard had
    assert _results(tmp_path / "merged") == _results(tmp_path / "one")


def test_merge_refuses_a_shard_of_another_configuration(tmp_path: Path, fake_studies) -> None:
    reproduce_run.run_reproduce(tmp_path / "shard0", quick=False, shard=(0, 2))
    with pytest.raises(ValueError, match=r"shard0 was computed with another configuration "
                                         r"\(differs in quick\)"):
        reproduce_run.run_reproduce(tmp_path / "merged", quick=True, merge=[tmp_path / "shard0"])
    with pytest.raises(ValueError, match="is not a finished shard"):
        reproduce_run.run_reproduce(tmp_path / "merged", quick=True, merge=[tmp_path])


def test_cli_shard_merge_and_resume_hint(tmp_path: Path, fake_studies) -> None:
    runner = CliRunner()
    for index in range(2):
        result = runner.invoke(cli, ["reproduce", "--quick", "--shard", str(index),
                                     "--n-shards", "2", "--out", str(tmp_path / f"s{index}")])
        assert result.exit_code == 0, result.output
        assert f"shard {index}/2:" in result.output
    # running a shard again resumes it: nothing is computed twice, no --overwrite needed
    CALLS.clear()
    again = runner.invoke(cli, ["reproduce", "--quick", "--shard", "0", "--n-shards", "2",
                                "--out", str(tmp_path / "s0")])
    assert again.exit_code == 0 and "0 unit(s) computed" in again.output
    result = runner.invoke(cli, ["reproduce", "--quick", "--merge", str(tmp_path / "s0"),
                                 "--merge", str(tmp_path / "s1"), "--out",
                                 str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "merged" / "report.html").is_file()
    fake_studies["studies"] = _studies(fail_at=2)
    result = runner.invoke(cli, ["reproduce", "--quick", "--out", str(tmp_path / "cut")])
    assert result.exit_code == 130
    assert f"interrupted: 2 finished unit(s) kept in {tmp_path / 'cut.units'}; resume with " \
        f"the same command and --out {tmp_path / 'cut'}" in result.output


@pytest.mark.parametrize(("arguments", "message"), [
    (["--shard", "0"], "--shard and --n-shards go together"),
    (["--shard", "2", "--n-shards", "2", "--out", "x"],
     "Invalid value for --shard: must be in [0, 1] for --n-shards 2, got 2"),
    (["--shard", "0", "--n-shards", "2"], "--shard needs --out"),
    (["--jobs", "2", "--shard", "0", "--n-shards", "2", "--out", "x"],
     "--jobs runs its own shards and merge: it excludes --shard and --merge"),
    (["--jobs", "0"], "Invalid value for '--jobs'"),
])
def test_cli_shard_errors(tmp_path: Path, fake_studies, arguments: list[str],
                          message: str) -> None:
    result = CliRunner().invoke(cli, ["reproduce", "--quick", *arguments])
    assert result.exit_code == 2 and message in result.output


# -- --jobs: real shard processes (a subprocess cannot see the fake studies above) ------------

def test_jobs_give_the_one_process_report(tmp_path: Path) -> None:
    # the dictionary-learning study has units and fixes its thread count: two shard processes
    # and the merge must give exactly the one-process results, and leave no shard behind
    arguments = ["reproduce", "--quick", "--only", "paper1_dictlearn", "--overwrite"]
    runner = CliRunner()
    single = runner.invoke(cli, [*arguments, "--out", str(tmp_path / "one")])
    assert single.exit_code == 0, single.output
    parallel = runner.invoke(cli, [*arguments, "--jobs", "2", "--out", str(tmp_path / "two")])
    assert parallel.exit_code == 0, parallel.output
    one, two = (json.loads((tmp_path / name / "results.json").read_text())
                for name in ("one", "two"))
    assert two["claims"] == one["claims"]
    assert two["studies"]["paper1_dictlearn"]["results"] == \
        one["studies"]["paper1_dictlearn"]["results"]
    # every unit came from a shard process: the merge computed none
    assert two["meta"]["units"]["paper1_dictlearn"]["computed"] == 0
    assert two["meta"]["units"]["paper1_dictlearn"]["loaded"] > 0
    assert not (tmp_path / "two.jobs").exists()


def test_jobs_report_a_failed_shard_with_its_log(tmp_path: Path) -> None:
    from sparsecnn.studies.parallel_run import ShardFailed, run_in_processes

    with pytest.raises(ShardFailed, match=r"(?s)shard 0 of 2 failed \(exit status 2; log "
                                           r".*shard-0\.log\):\n.*only names unknown studies "
                                           r"\['no_such_study'\]"):
        run_in_processes(tmp_path / "out", 2, quick=True, only=["no_such_study"])
    assert not (tmp_path / "out").exists()  # no report from failed shards


def test_jobs_check_the_dataset_before_starting_processes(tmp_path: Path) -> None:
    from sparsecnn.studies.parallel_run import run_in_processes

    with pytest.raises(ValueError, match="no-such-dataset"):
        run_in_processes(tmp_path / "out", 2, data=str(tmp_path / "no-such-dataset"))
    assert not (tmp_path / "out.jobs").exists()


@pytest.mark.parametrize("jobs", [1, 0, True, 2.0])
def test_jobs_refuse_fewer_than_two_processes(tmp_path: Path, jobs: object) -> None:
    from sparsecnn.studies.parallel_run import run_in_processes

    with pytest.raises(ValueError, match=r"jobs must be an int >= 2 \(one process needs no "
                                         r"shards\); got"):
        run_in_processes(tmp_path / "out", jobs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("content", "expected"), [
    (b"", ""),
    (b"shard 0/2:   0%| 0/4\rshard 0/2:  25%| 1/4 [00:10<00:30]\r",
     "shard 0/2:  25%| 1/4 [00:10<00:30]"),
    (b"models seed 0: 50%\r\x1b[A\nshard 0/2:  50%| 2/4\n\n", "shard 0/2:  50%| 2/4"),
    ("caf\u00e9 \u2588\u2588 3/4\r".encode(), "caf\u00e9 \u2588\u2588 3/4"),
])
def test_latest_progress_reads_the_last_bar_of_a_shard_log(tmp_path: Path, content: bytes,
                                                           expected: str) -> None:
    from sparsecnn.studies.parallel_run import latest_progress

    log = tmp_path / "shard-0.log"
    log.write_bytes(content)
    assert latest_progress(log) == expected
    assert latest_progress(tmp_path / "missing.log") == ""
