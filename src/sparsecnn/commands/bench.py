"""``sparsecnn bench``: run the side-by-side speed comparisons of ``benchmarks/``.

Each suite runs in its own Python process (one process, one run, peers side by side, as the
benchmarks require) and its printed table is saved to ``--out``.  The benchmarks live in the
source checkout, not in the installed package, and the peers come from the ``bench`` extra
(``pip install -e '.[bench]'`` or ``make bench``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click

from ..io import OutputExistsError, atomic_directory, write_text

BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks"
SUITES = {
    "engine": "run.py",          # P1/P2 against sklearn, sporco, SPAMS
    "layers": "bench_layers.py",  # SparseConv2d against Conv2d + ReLU
    "features": "bench_features.py",  # feature-world generation and constructed network
}


@click.command("bench")
@click.option("--suite", "suites", type=click.Choice([*SUITES, "all"]), multiple=True,
              default=("engine",), show_default=True, help="Suite to run (repeatable).")
@click.option("--quick", is_flag=True, help="Smaller engine problems (smoke run).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("runs/bench"), show_default=True, help="Output directory.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output directory.")
def command(suites: tuple[str, ...], quick: bool, seed: int, out_dir: Path,
            overwrite: bool) -> None:
    """Time sparsecnn beside its peers and write each suite's table to --out."""
    if not BENCHMARKS.is_dir():
        raise click.UsageError(f"benchmarks/ not found at {BENCHMARKS}: run from a source "
                               "checkout installed with pip install -e '.[bench]'")
    names = list(SUITES) if "all" in suites else list(dict.fromkeys(suites))
    try:
        with atomic_directory(out_dir, overwrite=overwrite) as staging:
            for name in names:
                arguments = [sys.executable, str(BENCHMARKS / SUITES[name])]
                if name == "engine":
                    arguments += ["--seed", str(seed), "--out", str(staging / "engine.json")]
                    arguments += ["--quick"] if quick else []
                click.echo(f"running {name} benchmark ...", err=True)
                completed = subprocess.run(arguments, capture_output=True, text=True,
                                           check=False)
                write_text(staging / f"{name}.txt", completed.stdout)
                click.echo(completed.stdout)
                if completed.returncode != 0:
                    raise click.ClickException(
                        f"{name} benchmark failed (exit {completed.returncode}):\n"
                        f"{completed.stderr[-2000:]}")
    except OutputExistsError as error:
        raise click.UsageError(str(error)) from None
    click.echo(f"tables written to {out_dir}", err=True)
