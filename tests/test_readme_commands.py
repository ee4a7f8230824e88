"""Every shell command of the README and the documentation runs as written.

The ```bash blocks of ``README.md`` and ``docs/**/*.md`` are parsed line by line (comments
dropped).  Each ``sparsecnn ...`` line is run in a fresh temporary working directory, in a
subprocess of the installed entry point's Python with this checkout's ``src`` first on the path,
exactly as written plus, for the sub-commands below only, options appended to keep it small
(click takes the last value of an option given twice, so an appended option overrides the
written one and everything else stays as written):

* ``reproduce``: ``--only paper1_dictlearn`` when the line names no ``--only``;
* ``generate``: ``--n 200``; ``construct``: ``--n 60 --train-sizes 20 --seeds 0 --steps 3``;
* ``train``: ``--channels 4,8 --batch-size 256`` (the epochs, output and resume semantics stay
  as written);
* ``interpret``: ``--n-inputs 4 --max-iter 50``;
* ``robustness``: ``--epochs 2 --n-train 300 --n-images 30 --pgd-steps 1 --n-minimal 0
  --n-iter 0,2``.

A line that reads what an earlier line of the same page writes (a path under that line's
``--out``, or the same ``--out`` with ``--resume``) runs after those lines, in the same
directory.

Skipped by design (the test fails on any other kind of line, so nothing is skipped silently):

* ``make ...``: the set-up targets create ``.venv`` and install packages (``tests/
  test_install_torch.py`` checks the Makefile's choices);
* ``apt-get ...`` and ``dpkg ...``: system package management (needs root and the network);
* ``sparsecnn bench ...``: runs the benchmark suites of the source checkout against the peers of
  the ``bench`` extra (sporco, SPAMS; minutes even with ``--quick``); ``tests/
  test_bench_command.py`` tests the command.
* lines needing a dataset that is not on this machine (``--data fashion-mnist`` without the
  Debian package ``dataset-fashion-mnist`` or ``$SPARSECNN_DATA``) are skipped with that reason.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"```bash\n(.*?)```", re.DOTALL)
SKIPPED_BY_DESIGN = {"make", "apt-get", "dpkg"}
SKIPPED_SUBCOMMANDS = {"bench"}
SMALL = {
    "generate": ["--n", "200"],
    "construct": ["--n", "60", "--train-sizes", "20", "--seeds", "0", "--steps", "3"],
    "train": ["--channels", "4,8", "--batch-size", "256"],
    "interpret": ["--n-inputs", "4", "--max-iter", "50"],
    "robustness": ["--epochs", "2", "--n-train", "300", "--n-images", "30", "--pgd-steps", "1",
                   "--n-minimal", "0", "--n-iter", "0,2"],
}
# a case that fails today only because another change has not landed: strict, so the marker
# must go when it lands
# commands that are documented before the code that runs them lands: xfail(strict=True), so
# the day they pass the entry must go
PENDING: dict[str, str] = {}
SLOW = {"reproduce", "construct", "robustness", "train", "interpret"}


@dataclass
class Line:
    page: str
    index: int
    words: list[str]
    after: list[Line] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(self.words)

    @property
    def out(self) -> str | None:
        return self.words[self.words.index("--out") + 1] if "--out" in self.words else None


def shell_lines() -> list[Line]:
    lines = []
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for page in pages:
        for block in BLOCK.findall(page.read_text()):
            for raw in block.splitlines():
                words = shlex.split(raw, comments=True)
                if words:
                    lines.append(Line(str(page.relative_to(ROOT)), len(lines), words))
    return lines


def commands() -> list[Line]:
    lines = [line for line in shell_lines() if line.words[0] == "sparsecnn"]
    for line in lines:
        for earlier in lines:
            if earlier.index >= line.index:
                break
            if earlier.page != line.page or earlier.out is None:
                continue
            reads = any(word.startswith(f"{earlier.out}/") for word in line.words[1:])
            resumes = "--resume" in line.words and line.out == earlier.out
            if reads or resumes:
                line.after.append(earlier)
    return lines


def argv(line: Line) -> list[str]:
    words = line.words[1:]
    small = list(SMALL.get(words[0], [])) if words and "--help" not in words else []
    if words and words[0] == "reproduce" and "--only" not in words and "--help" not in words:
        small = ["--only", "paper1_dictlearn"]
    return [*words, *small]


def run(line: Line, cwd: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", "from sparsecnn.cli import main; main()",
                           *argv(line)], cwd=cwd, env=environment, capture_output=True,
                          text=True, timeout=900)


def _cases() -> list:
    cases = []
    for line in commands():
        marks = []
        name = line.words[1] if len(line.words) > 1 else ""
        if name in SLOW and "--help" not in line.words:
            marks.append(pytest.mark.slow)
        reason = PENDING.get(" ".join(line.words[1:]))
        if reason is not None:
            marks.append(pytest.mark.xfail(strict=True, reason=reason))
        cases.append(pytest.param(line, marks=marks, id=f"{line.page}:{line.text}"))
    return cases


def _dataset_available(line: Line) -> str | None:
    if "--data" not in line.words:
        return None
    name = line.words[line.words.index("--data") + 1]
    if name in ("digits",) or Path(name).exists():
        return None
    from sparsecnn.data import find_named_dataset

    try:
        find_named_dataset(name)
    except (ValueError, OSError) as error:
        return str(error)
    return None


@pytest.mark.parametrize("line", _cases())
def test_shell_command_runs_as_written(line: Line, tmp_path: Path) -> None:
    if line.words[1:2] and line.words[1] in SKIPPED_SUBCOMMANDS:
        pytest.skip("skipped by design: see the module docstring")
    missing = _dataset_available(line)
    if missing is not None:
        pytest.skip(f"dataset absent on this machine: {missing}")
    for earlier in line.after:
        done = run(earlier, tmp_path)
        assert done.returncode == 0, f"prerequisite {earlier.text!r}:\n{done.stderr[-3000:]}"
    result = run(line, tmp_path)
    assert result.returncode == 0, f"{line.text!r} failed:\n{result.stderr[-3000:]}"
    out = line.out
    if out is not None and "--help" not in line.words:
        assert (tmp_path / out).is_dir(), f"{line.text!r} wrote nothing to {out}"
    elif "--help" in line.words:
        assert result.stdout.startswith("Usage: ")


def test_every_shell_line_is_run_or_skipped_by_design() -> None:
    lines = shell_lines()
    assert len([line for line in lines if line.words[0] == "sparsecnn"]) >= 10
    unknown = [f"{line.page}: {line.text}" for line in lines
               if line.words[0] != "sparsecnn" and line.words[0] not in SKIPPED_BY_DESIGN]
    assert unknown == [], "add these to the test (or to the skipped-by-design list)"


def test_pending_cases_exist() -> None:
    # a PENDING entry naming no documented command would be a marker that cannot fail
    documented = {" ".join(line.words[1:]) for line in commands()}
    assert set(PENDING) <= documented


def test_readme_interpret_reads_what_readme_train_writes() -> None:
    line = next(line for line in commands() if line.words[1:2] == ["interpret"]
                and line.page == "README.md")
    assert [earlier.words[1] for earlier in line.after] == ["train"]
