"""``sparsecnn bench``: run the side-by-side speed comparisons of ``benchmarks/``.

Each suite runs in its own Python process (one process, one run, peers side by side, as the
benchmarks require).  Its progress lines (the script's stderr) are echoed as they come, each
prefixed with the suite's name, and its table (the script's stdout) is printed and saved to
``--out/<suite>.txt``.  The benchmarks live in the source checkout, not in the installed
package; the peers come from the ``bench`` extra (``pip install -e '.[bench]'`` or
``make bench``).  A suite whose peers are not installed still runs what it can (sparsecnn's
own timings, the peers that are there); the command then names the missing peers, says how
to install them and, when a peer of the ``bench`` extra is missing, exits with status 3 after
writing the tables (lca-pytorch, which is not on PyPI, is named but does not change the
status).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from ..io import OutputExistsError, atomic_directory, write_text

BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks"
# exit status when every suite ran but some peers were missing (the comparison is partial)
MISSING_PEERS_EXIT = 3


@dataclass(frozen=True)
class Peer:
    """A peer library: the module a suite imports and how a user installs it; ``extra``:
    whether the ``bench`` extra provides it (only those make the comparison incomplete)."""

    module: str
    install: str
    extra: bool = True


@dataclass(frozen=True)
class Suite:
    script: str
    what: str
    peers: tuple[Peer, ...] = ()
    quick: tuple[str, ...] = ()  # arguments of the quick mode (about 2 minutes in all)
    full: tuple[str, ...] = ()
    seeded: bool = False  # takes --seed
    json: bool = False  # takes --out FILE.json
    optional: bool = field(default=False)  # the script may be absent (written elsewhere)


SPAMS = Peer("spams", "pip install spams-bin  (or pip install -e '.[bench]')")
SPORCO = Peer("sporco", "pip install sporco  (or pip install -e '.[bench]')")
LCA_PYTORCH = Peer("lcapt", "not on PyPI: pip install git+https://github.com/lanl/lca-pytorch",
                   extra=False)

SUITES: dict[str, Suite] = {
    "engine": Suite("run.py", "P1/P2 sparse coding against scikit-learn, SPAMS and sporco",
                    (SPAMS, SPORCO), quick=("--quick",), seeded=True, json=True),
    "layers": Suite("bench_layers.py", "SparseConv2d against (1 + 2k) conv2d passes",
                    quick=("--repeats", "3", "--passes", "1", "--k", "1", "2",
                           "--idle-wait", "0")),
    "features": Suite("bench_features.py", "feature-world generation and constructed network",
                      quick=("--n", "2000", "--naive-n", "20")),
    "lca": Suite("bench_lca.py", "LCA layer against lca-pytorch's LCAConv2D",
                 (LCA_PYTORCH,), quick=("--quick",)),
    "throughput": Suite("bench_throughput.py",
                        "images/s of the Fashion-MNIST study's models: training and PGD",
                        quick=("--quick",)),
    # written in benchmarks/bench_multilayer.py; listed when present.  Its full size (7
    # rounds, T = 1, 3, 6) took 94 s of a 172 s quick run on an idle machine; 2 rounds of
    # T = 1, 3 take 16 s.
    "multilayer": Suite("bench_multilayer.py", "HierarchicalSparseCoding against ML-ISTA",
                        quick=("--rounds", "2", "--T", "1", "3"), optional=True),
}


def available_suites() -> list[str]:
    """Suite names whose script is in the checkout (an optional suite may not be yet)."""
    return [name for name, suite in SUITES.items()
            if not suite.optional or (BENCHMARKS / suite.script).is_file()]


def missing_peers(names: list[str]) -> dict[str, list[Peer]]:
    """Per suite, the peers that cannot be imported in this environment."""
    missing = {}
    for name in names:
        absent = [peer for peer in SUITES[name].peers
                  if importlib.util.find_spec(peer.module) is None]
        if absent:
            missing[name] = absent
    return missing


def _echo_progress(stream, name: str) -> None:
    for line in stream:
        click.echo(f"[{name}] {line.rstrip()}", err=True)


def run_suite(name: str, arguments: list[str]) -> tuple[int, str]:
    """Run one suite script; progress (stderr) is echoed line by line while it runs, the
    table (stdout) is returned with the exit status."""
    process = subprocess.Popen(arguments, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, bufsize=1)
    # stderr on its own thread, so neither pipe can fill up while the other is read
    reader = threading.Thread(target=_echo_progress, args=(process.stderr, name), daemon=True)
    reader.start()
    table = process.stdout.read()
    status = process.wait()
    reader.join()
    return status, table


@click.command("bench")
@click.option("--suite", "suites", type=click.Choice([*SUITES, "all"]), multiple=True,
              default=("engine",), show_default=True, help="Suite to run (repeatable).")
@click.option("--quick", is_flag=True,
              help="Small problems and few repeats: every suite in about 2 minutes.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("runs/bench"), show_default=True, help="Output directory.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output directory.")
def command(suites: tuple[str, ...], quick: bool, seed: int, out_dir: Path,
            overwrite: bool) -> None:
    """Time sparsecnn beside its peers and write each suite's table to --out.

    Exit status 3: the tables were written but peers of the bench extra were missing (named,
    with how to install them, on stderr)."""
    if not BENCHMARKS.is_dir():
        raise click.UsageError(f"benchmarks/ not found at {BENCHMARKS}: run from a source "
                               "checkout installed with pip install -e '.[bench]'")
    names = available_suites() if "all" in suites else list(dict.fromkeys(suites))
    for name in names:
        if not (BENCHMARKS / SUITES[name].script).is_file():
            raise click.UsageError(f"suite {name!r} needs benchmarks/{SUITES[name].script}, "
                                   "which is not in this checkout")
    missing = missing_peers(names)
    for name, peers in missing.items():
        click.echo(f"{name}: peers not installed, their rows are skipped: "
                   + "; ".join(f"{peer.module} ({peer.install})" for peer in peers), err=True)
    try:
        with atomic_directory(out_dir, overwrite=overwrite) as staging:
            for index, name in enumerate(names, 1):
                suite = SUITES[name]
                arguments = [sys.executable, str(BENCHMARKS / suite.script)]
                arguments += list(suite.quick if quick else suite.full)
                arguments += ["--seed", str(seed)] if suite.seeded else []
                arguments += ["--out", str(staging / f"{name}.json")] if suite.json else []
                click.echo(f"suite {index}/{len(names)}: {name} ({suite.what})"
                           + (", quick" if quick else ""), err=True)
                start = time.perf_counter()
                status, table = run_suite(name, arguments)
                write_text(staging / f"{name}.txt", table)
                click.echo(table)
                if status != 0:
                    raise click.ClickException(f"{name} benchmark failed (exit {status}); "
                                               "its messages are above")
                click.echo(f"suite {name} done in {time.perf_counter() - start:.0f} s",
                           err=True)
    except OutputExistsError as error:
        raise click.UsageError(str(error)) from None
    click.echo(f"tables written to {out_dir}", err=True)
    if missing:
        absent = {peer for group in missing.values() for peer in group}
        click.echo("comparison incomplete, peers missing:\n  " + "\n  ".join(
            sorted(f"{peer.module}: {peer.install}" for peer in absent)), err=True)
        if any(peer.extra for peer in absent):
            sys.exit(MISSING_PEERS_EXIT)
