"""``sparsecnn bench`` runs each suite in its own process and saves its table."""

from __future__ import annotations

from pathlib import Path

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
    for script in bench.SUITES.values():
        assert (bench.BENCHMARKS / script).is_file()
