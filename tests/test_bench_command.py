"""``sparsecnn bench`` runs each suite in its own process and saves its table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sparsecnn.cli import cli
from sparsecnn.commands import bench


def run_fake_layers_suite(tmp_path: Path, monkeypatch, script: str):
    """Run ``sparsecnn bench --suite layers`` with ``script`` standing in for the suite."""
    fake = tmp_path / "benchmarks"
    fake.mkdir(exist_ok=True)
    (fake / "bench_layers.py").write_text(script)
    monkeypatch.setattr(bench, "BENCHMARKS", fake)
    out = tmp_path / "out"
    return CliRunner().invoke(cli, ["bench", "--suite", "layers", "--out", str(out)]), out


def test_suite_table_is_saved_and_outputs_are_not_overwritten(tmp_path: Path,
                                                              monkeypatch) -> None:
    result, out = run_fake_layers_suite(tmp_path, monkeypatch,
                                        "import sys\nprint('ratio 1.000', sys.argv[1:])\n")
    assert result.exit_code == 0, result.output
    assert (out / "layers.txt").read_text() == "ratio 1.000 []\n"
    again = CliRunner().invoke(cli, ["bench", "--suite", "layers", "--out", str(out)])
    assert again.exit_code == 2 and "exists; pass --overwrite" in again.output


def test_failing_suite_is_an_error_and_leaves_no_output(tmp_path: Path, monkeypatch) -> None:
    result, out = run_fake_layers_suite(tmp_path, monkeypatch,
                                        "raise SystemExit('peer missing')\n")
    assert result.exit_code == 1 and "layers benchmark failed (exit 1)" in result.output
    assert "peer missing" in result.output and not out.exists()


def test_missing_checkout_is_a_usage_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(bench, "BENCHMARKS", tmp_path / "nowhere")
    result = CliRunner().invoke(cli, ["bench", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "benchmarks/ not found" in result.output


def test_real_suites_exist() -> None:
    for name, suite in bench.SUITES.items():
        assert suite.optional or (bench.BENCHMARKS / suite.script).is_file(), name
    assert set(bench.available_suites()) >= {"engine", "layers", "features", "lca",
                                              "throughput"}


def test_missing_peer_is_named_with_its_install_command_and_exit_status_3(
        tmp_path: Path, monkeypatch) -> None:
    """The suite still runs and its table is saved; the missing module and how to install it
    are said before and after, and the status tells a script the comparison is partial."""
    absent = bench.Peer("sparsecnn_no_such_peer_module", "pip install no-such-peer")
    monkeypatch.setitem(bench.SUITES, "layers",
                        bench.Suite("bench_layers.py", "fake", (absent,)))
    result, out = run_fake_layers_suite(tmp_path, monkeypatch, "print('our rows only')\n")
    assert result.exit_code == bench.MISSING_PEERS_EXIT == 3, result.output
    assert result.output.count("sparsecnn_no_such_peer_module") == 2
    assert "pip install no-such-peer" in result.output
    assert (out / "layers.txt").read_text() == "our rows only\n"


def test_peer_outside_the_extra_is_named_but_keeps_status_0(tmp_path: Path,
                                                             monkeypatch) -> None:
    absent = bench.Peer("sparsecnn_no_such_peer_module", "not on PyPI: build it", extra=False)
    monkeypatch.setitem(bench.SUITES, "layers",
                        bench.Suite("bench_layers.py", "fake", (absent,)))
    result, _ = run_fake_layers_suite(tmp_path, monkeypatch, "print('our rows only')\n")
    assert result.exit_code == 0, result.output
    assert "not on PyPI: build it" in result.output


def test_progress_lines_are_echoed_per_suite_and_quick_arguments_passed(
        tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(bench.SUITES, "layers",
                        bench.Suite("bench_layers.py", "fake", quick=("--tiny",)))
    script = ("import sys\nfor i in range(3):\n    print(f'problem {i}', file=sys.stderr, "
              "flush=True)\nprint('table', sys.argv[1:])\n")
    fake = tmp_path / "benchmarks"
    fake.mkdir()
    (fake / "bench_layers.py").write_text(script)
    monkeypatch.setattr(bench, "BENCHMARKS", fake)
    result = CliRunner().invoke(cli, ["bench", "--suite", "layers", "--quick", "--out",
                                      str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "suite 1/1: layers (fake), quick" in result.output
    assert all(f"[layers] problem {i}" in result.output for i in range(3))
    assert "table ['--tiny']" in result.output and "suite layers done in" in result.output


def test_all_without_an_optional_suite_script_runs_the_others(tmp_path: Path,
                                                              monkeypatch) -> None:
    fake = tmp_path / "benchmarks"
    fake.mkdir()
    for suite in bench.SUITES.values():
        if not suite.optional:
            (fake / suite.script).write_text("print('ran')\n")
    monkeypatch.setattr(bench, "BENCHMARKS", fake)
    monkeypatch.setattr(bench, "missing_peers", lambda names: {})
    result = CliRunner().invoke(cli, ["bench", "--suite", "all", "--out",
                                      str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    written = sorted(path.stem for path in (tmp_path / "out").glob("*.txt"))
    assert written == sorted(name for name, s in bench.SUITES.items() if not s.optional)
    explicit = CliRunner().invoke(cli, ["bench", "--suite", "multilayer", "--out",
                                        str(tmp_path / "other")])
    assert explicit.exit_code == 2 and "bench_multilayer.py" in explicit.output


@pytest.mark.slow
def test_engine_without_spams_runs_the_other_solvers(tmp_path: Path) -> None:
    """The real engine suite on its smallest problem with ``import spams`` failing: the
    missing peer is said once, its rows are absent, the others are timed and scored."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "spams.py").write_text("raise ImportError('hidden by the test')\n")
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(shim), *filter(None, [os.environ.get("PYTHONPATH")])]))
    completed = subprocess.run(
        [sys.executable, str(bench.BENCHMARKS / "run.py"), "--quick", "--only", "P1",
         "--n-signals", "300", "--solvers", "homotopy float32,spams,lasso_cd"],
        capture_output=True, text=True, env=environment, check=False, timeout=600)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stderr.count("peer spams not installed") == 1
    assert "pip install spams-bin" in completed.stderr
    assert "spams lasso" not in completed.stdout
    # progress per problem and solver, then both tables with the homotopy at the optimum
    assert "P1 signed       sparsecnn homotopy float32" in completed.stderr
    tables = completed.stdout.split("P1 non-negative")
    assert len(tables) == 2
    for table in tables:
        row = next(line for line in table.splitlines() if "homotopy float32" in line)
        assert float(row.split()[6]) < 1e-6  # F/F* - 1 of the exact path


@pytest.mark.parametrize("name", bench.available_suites())
def test_quick_arguments_are_options_of_the_suite_script(name: str) -> None:
    """Every option ``--quick`` passes to a suite is one its script declares (its
    ``--help``), so a renamed option fails here rather than in a user's quick run."""
    suite = bench.SUITES[name]
    completed = subprocess.run(
        [sys.executable, str(bench.BENCHMARKS / suite.script), "--help"],
        capture_output=True, text=True, check=False, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    declared = set(completed.stdout.replace(",", " ").replace("[", " ").split())
    for option in (argument for argument in suite.quick if argument.startswith("--")):
        assert option in declared, f"{suite.script} has no {option}"
