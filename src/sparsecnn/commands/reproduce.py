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
@click.option("--shard", type=click.IntRange(min=0), default=None, metavar="I",
              help="Compute only the units of shard I of --n-shards into --out (no report); "
                   "run again to resume it.")
@click.option("--n-shards", type=click.IntRange(min=1), default=None, metavar="N",
              help="Number of shards (with --shard).")
@click.option("--merge", "merge", multiple=True, metavar="SHARD_DIR",
              type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Build the report from these shards' units (repeatable), computing any "
                   "unit none of them has.")
@click.option("--keep-units", is_flag=True,
              help="Keep the finished units (<out>.units/) after the report is written.")
@click.option("--claims", type=click.Path(file_okay=False, path_type=Path), default=None,
              hidden=True, help="With --shard: own the units first claimed in this directory "
                                "(the shard processes of --jobs share it).")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes: N > 1 runs N shards at once (in <out>.jobs/), then the merge; "
                   "the report is the same as with one process.")
def command(quick: bool, out_dir: Path | None, name: str | None, seed: int, device: str,
            only: tuple[str, ...], overwrite: bool, data: str, shard: int | None,
            n_shards: int | None, merge: tuple[Path, ...], keep_units: bool,
            claims: Path | None, jobs: int) -> None:
    """Run the reproduction study of both papers and write runs/<name>/report.html and
    results.json (every claim beside its measured numbers and verdict).

    Finished units (one study x seed each) are kept in <out>.units/ until the report is
    written: after an interruption, the same command with the same --out resumes."""
    from ..studies.parallel_run import ShardFailed, jobs_directory, run_in_processes
    from ..studies.reproduce_run import run_reproduce, units_directory

    if (shard is None) != (n_shards is None):
        raise click.UsageError("--shard and --n-shards go together")
    if shard is not None and shard >= n_shards:
        raise click.BadParameter(f"must be in [0, {n_shards - 1}] for --n-shards "
                                 f"{n_shards}, got {shard}", param_hint="--shard")
    if shard is not None and (out_dir is None or merge):
        raise click.UsageError("--shard needs --out (the shard's directory) and excludes "
                               "--merge")
    if jobs > 1 and (shard is not None or merge):
        raise click.UsageError("--jobs runs its own shards and merge: it excludes --shard and "
                               "--merge")
    if name is None:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        name = f"{stamp}-{'quick' if quick else 'full'}"
    target = out_dir if out_dir is not None else Path("runs") / name
    # a shard directory is resumed by running the shard again; anything else is an output
    if shard is None or not _is_shard_directory(target):
        require_replaceable(target, overwrite)
    try:
        if jobs > 1:
            summary = run_in_processes(target, jobs, quick=quick, seed=seed, device=device,
                                       overwrite=overwrite, only=list(only) or None,
                                       name=name, data=data, keep_units=keep_units)
        else:
            summary = run_reproduce(target, quick=quick, seed=seed, device=device,
                                    overwrite=overwrite, only=list(only) or None, name=name,
                                    data=data,
                                    shard=None if shard is None else (shard, n_shards),
                                    merge=list(merge), keep_units=keep_units, claims=claims)
    except KeyboardInterrupt:
        store = (jobs_directory(target) if jobs > 1
                 else units_directory(target, shard=shard is not None))
        kept = len(list(store.glob("**/units/*/*.json" if jobs > 1 else "*/*.json"))) \
            if store.is_dir() else 0
        click.echo(f"interrupted: {kept} finished unit(s) kept in {store}; resume with the "
                   f"same command and --out {target}", err=True)
        raise SystemExit(130) from None
    except (OutputExistsError, ValueError) as error:
        raise click.UsageError(str(error)) from None
    except ShardFailed as error:  # a shard process of --jobs failed: its log says why
        click.echo(f"error: {error}", err=True)
        raise SystemExit(1) from None
    if shard is not None:
        deferred = ", ".join(summary.deferred or []) or "none"
        click.echo(f"shard {shard}/{n_shards}: {summary.units_computed} unit(s) computed, "
                   f"{summary.units_loaded} already there -> {target} (studies left to the "
                   f"merge: {deferred})")
    else:
        counts = ", ".join(f"{n} {v}" for v, n in sorted(summary.verdicts.items()))
        click.echo(f"{summary.n_claims} claims ({counts}) -> {summary.out_dir / 'report.html'}")
    if summary.failed:
        click.echo(f"failed studies: {', '.join(summary.failed)}", err=True)
        raise SystemExit(1)


def _is_shard_directory(path: Path) -> bool:
    """An earlier (possibly interrupted) run of a shard: only ``units/`` and ``shard.json``."""
    return path.is_dir() and not path.is_symlink() and \
        {p.name for p in path.iterdir()} <= {"units", "shard.json"} and \
        (path / "units" / "fingerprint.json").is_file()
