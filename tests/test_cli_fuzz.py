"""Fuzzing every ``sparsecnn`` sub-command's options: whatever the values,
of the right type or not, the only outcomes are exit 0 or one ``Error:`` line with exit 1 or
2 -- never a traceback, an internal error, a crash or a hang.

The options come from the commands themselves (click's parameters), so a new option is fuzzed
without editing this file.  Valid values are small; the expensive step of a command (training,
the studies, the benchmarks) is replaced by a stub that ends the command with exit 0 once its
arguments are accepted, so every example takes well under a second; ``generate`` runs for
real.  A per-example alarm turns a hang into a failure.
"""

from __future__ import annotations

import signal
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sparsecnn.features
import sparsecnn.studies.parallel_run
import sparsecnn.studies.reproduce_run
import sparsecnn.training
from sparsecnn.cli import cli
from sparsecnn.commands import bench, interpret, train

SECONDS_PER_EXAMPLE = 30

# values of the wrong kind for any option: text, signs, special floats, separators, huge ints
WRONG = st.one_of(
    st.text(max_size=6),
    st.sampled_from(["", "-1", "-0", "nan", "inf", "-inf", "1e400", "0x10", "1,", ",", "a,b",
                     "1.5", "10**9", "\u0661", " 3", "None", "--out", "0,,1", "1e-400"]),
    st.integers(-(10**20), -1).map(str),
    st.integers(10**13, 10**20).map(str),
)
# valid values of free-text options, by option name
TEXT_VALUES = {
    "--n-iter": ["0", "0,1", "1,2"], "--epsilons-linf": ["0", "0,0.1"],
    "--epsilons-l2": ["0", "0.5"], "--train-sizes": ["4", "4,8"], "--seeds": ["0", "0,1"],
    "--channels": ["2", "2,3"], "--strides": ["1", "1,2"], "--dataset": ["digits"],
    "--name": ["fuzz"], "--only": ["paper1_identities"], "--device": ["cpu"],
}
SMALL_INT = {"--n": 40, "--image-size": 40, "--distractors": 4, "--displacement": 2}


def valid_values(param: click.Option) -> st.SearchStrategy[str]:
    kind = param.type
    name = param.opts[0]
    if isinstance(kind, click.Choice):
        return st.sampled_from([str(c) for c in kind.choices])
    if isinstance(kind, click.IntRange) or kind is click.INT:
        low = getattr(kind, "min", None) or 0
        high = max(low, SMALL_INT.get(name, low + 3))
        return st.integers(low, high).map(str)
    if isinstance(kind, click.FloatRange) or kind is click.FLOAT:
        low = getattr(kind, "min", None) or 0.0
        return st.floats(low, low + 1, exclude_min=bool(getattr(kind, "min_open", False)),
                         allow_nan=False).map(repr)
    return st.sampled_from(TEXT_VALUES.get(name, ["x"]))


def option_arguments(command: click.Command, out: Path) -> st.SearchStrategy[list[str]]:
    """Random option lists for ``command``: every option absent or valid, except at most one
    with a wrong value (so that the checks after the first wrong value are reached too)."""
    options = [p for p in command.params
               if isinstance(p, click.Option) and p.opts[0] not in ("--help", "--out")]

    def one(param: click.Option, wrong: bool) -> st.SearchStrategy[list[str]]:
        flag = param.opts[0]
        if param.is_flag:
            return st.one_of(st.just([]),
                             st.sampled_from([flag, *param.secondary_opts]).map(lambda n: [n]))
        value = WRONG if wrong else valid_values(param)
        present = value.map(lambda v: [flag, v])
        return present if wrong else st.one_of(st.just([]), present)

    def build(wrong_index: int | None) -> st.SearchStrategy[list[str]]:
        pieces = [one(param, index == wrong_index) for index, param in enumerate(options)]
        return st.tuples(*pieces).map(
            lambda parts: [item for part in parts for item in part] + ["--out", str(out)])

    return st.one_of(st.none(), st.integers(0, len(options) - 1)).flatmap(build)


def _accepted(*args: object, **kwargs: object) -> None:
    # the arguments passed every check and the work would start here: end the command cleanly
    raise click.exceptions.Exit(0)


@pytest.fixture(autouse=True)
def stub_expensive_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train, "train", _accepted)
    monkeypatch.setattr(interpret, "train_default_model", _accepted)
    monkeypatch.setattr(sparsecnn.training, "train_classifier", _accepted)
    monkeypatch.setattr(sparsecnn.studies.reproduce_run, "run_reproduce", _accepted)
    monkeypatch.setattr(sparsecnn.studies.parallel_run, "run_in_processes", _accepted)
    monkeypatch.setattr(sparsecnn.features, "construct", _accepted)
    monkeypatch.setattr(bench, "run_suite", _accepted)


def _alarm(signum: int, frame: object) -> None:
    raise TimeoutError(f"a command ran longer than {SECONDS_PER_EXAMPLE} s (a hang)")


def check_outcome(arguments: list[str]) -> None:
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(SECONDS_PER_EXAMPLE)
    try:
        result = CliRunner().invoke(cli, arguments)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    shown = f"sparsecnn {' '.join(arguments)}\n{result.output}"
    assert not isinstance(result.exception, TimeoutError), shown
    assert result.exit_code in (0, 1, 2), shown
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        (shown, result.exception)
    assert "Traceback" not in result.output, shown
    if result.exit_code:
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1, shown
        assert "internal error" not in errors[0], shown


FUZZ = settings(max_examples=15, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_fuzz_options(name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    command = cli.commands[name]
    base = tmp_path_factory.mktemp(name)

    @FUZZ
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        out = base / f"run{len(list(base.iterdir()))}"
        arguments = data.draw(option_arguments(command, out))
        check_outcome([name, *arguments])

    run()


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_fuzz_unknown_arguments(name: str, tmp_path: Path) -> None:
    @FUZZ
    @given(extra=st.lists(WRONG, min_size=1, max_size=3))
    def run(extra: list[str]) -> None:
        check_outcome([name, *extra, "--out", str(tmp_path / "never")])

    run()
