"""``sparsecnn reproduce``: run every study on embedded data and write the report."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from ..io import OutputExistsError
from ._limits import require_replaceable


class _ReproduceCommand(click.Command):
    """Lists the discovered studies under ``--help`` (the names ``--only`` accepts), read when
    help is asked for so that ``sparsecnn`` itself starts without importing the studies."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from ..studies import discover_studies

        with formatter.section("Studies (--only NAME; expected seconds quick / full)"):
            formatter.write_dl([(study.name, f"{study.title} [{study.cost[0]:g} / "
                                 f"{study.cost[1]:g} s]") for study in discover_studies()])
        super().format_epilog(ctx, formatter)


@click.command("reproduce", cls=_ReproduceCommand)
@click.option("--quick", is_flag=True,
              help="Fewer seeds and steps (about 3 minutes on 2 cores; full: about 7).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Output directory [default: runs/<name>].")
@click.option("--name", default=None,
              help="Run name used for the default output directory [default: a timestamp].")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="torch device.")
@click.option("--only", multiple=True, metavar="NAME",
              help="Run only this study (repeatable); the names are listed below.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output directory.")
@click.option("--data", default="digits", show_default=True,
              help="Dataset of the studies that train classifiers: digits (embedded), mnist, "
                   "fashion-mnist, kmnist, or a dataset directory.")
def command(quick: bool, out_dir: Path | None, name: str | None, seed: int, device: str,
            only: tuple[str, ...], overwrite: bool, data: str) -> None:
    """Run the reproduction study of both papers and write runs/<name>/report.html and
    results.json (every claim beside its measured numbers and verdict)."""
    from ..studies.reproduce_run import run_reproduce

    if name is None:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        name = f"{stamp}-{'quick' if quick else 'full'}"
    target = out_dir if out_dir is not None else Path("runs") / name
    require_replaceable(target, overwrite)
    try:
        summary = run_reproduce(target, quick=quick, seed=seed, device=device,
                                overwrite=overwrite, only=list(only) or None, name=name,
                                data=data)
    except (OutputExistsError, ValueError) as error:
        raise click.UsageError(str(error)) from None
    counts = ", ".join(f"{n} {v}" for v, n in sorted(summary.verdicts.items()))
    click.echo(f"{summary.n_claims} claims ({counts}) -> {summary.out_dir / 'report.html'}")
    if summary.failed:
        click.echo(f"failed studies: {', '.join(summary.failed)}", err=True)
        raise SystemExit(1)
