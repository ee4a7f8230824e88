"""A reproduce run spread over processes on one machine: ``jobs`` shard processes
(:func:`~.reproduce_run.run_reproduce` with ``shard=(i, jobs)``) sharing one unit store and a
claims directory, so each takes the next unit no one has claimed (first come, first served:
no shard idles while another still has a fixed share to do), then the merge step in this
process, which runs the studies without units, reads the shared units and writes the report.

The report equals a one-process run's: a unit is a deterministic function of the run's
configuration (every study that has units fixes its torch thread count, so which process
computes it cannot change a reduction order), and the store refuses units of another
configuration.  Everything lives in ``<out>.jobs/`` (``shared/units/``, ``claims/``, one log per
shard); an interrupted run resumes with the same command (finished units are loaded, unfinished
claims are dropped and claimed again), and the directory is removed once the report is written
unless ``keep_units``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from ..report.units import UnitStore
from .reproduce_run import ReproduceSummary, configuration, run_reproduce, units_directory

__all__ = ["ShardFailed", "jobs_directory", "latest_progress", "run_in_processes"]

_POLL_SECONDS = 0.5
_STATUS_SECONDS = 60.0  # how often the shards' latest progress lines are printed
_LOG_TAIL = 3000  # characters of a failed shard's log quoted in the error


def latest_progress(log: Path) -> str:
    """The last progress line a shard wrote to ``log`` (tqdm redraws its bars with carriage
    returns, so the line after the last one), without cursor codes; "" before the first."""
    try:
        with open(log, "rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - 4096))
            tail = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    pieces = [p.replace("\x1b[A", "").strip()
              for p in tail.replace("\n", "\r").split("\r")]
    pieces = [p for p in pieces if p]
    return pieces[-1] if pieces else ""


class ShardFailed(RuntimeError):
    """A shard process of a parallel run exited with an error (the message quotes its log)."""


def jobs_directory(out_dir: str | Path) -> Path:
    """Where a parallel run keeps its shards: ``<out>.jobs`` beside the output directory."""
    target = Path(out_dir)
    return target.with_name(f"{target.name}.jobs")


def _shard_command(index: int, jobs: int, directory: Path, claims: Path, *, quick: bool,
                   seed: int, device: str, data: str, only: list[str] | None) -> list[str]:
    # never --overwrite: the store was prepared here, a shard clearing it would race the others
    command = [sys.executable, "-m", "sparsecnn", "reproduce", "--shard", str(index),
               "--n-shards", str(jobs), "--out", str(directory), "--claims", str(claims),
               "--seed", str(seed), "--device", device, "--data", data]
    if quick:
        command.append("--quick")
    for name in only or []:
        command += ["--only", name]
    return command


def run_in_processes(out_dir: str | Path, jobs: int, *, quick: bool = False, seed: int = 0,
                     device: str = "cpu", overwrite: bool = False,
                     only: list[str] | None = None, name: str | None = None,
                     data: str = "digits", keep_units: bool = False) -> ReproduceSummary:
    """The report of :func:`~.reproduce_run.run_reproduce` with the same arguments, computed by
    ``jobs`` shard processes and a merge step (module docstring).  A shard that fails raises
    :class:`ShardFailed` quoting the end of its log; an interruption stops every shard and keeps
    their finished units."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 2:
        raise ValueError(f"jobs must be an int >= 2 (one process needs no shards); got {jobs!r}")
    # a missing or damaged dataset, or units of another configuration: one error, no process
    _, _, fingerprint = configuration(data, quick=quick, seed=seed, device=device)
    root = jobs_directory(out_dir)
    shared, claims = root / "shared", root / "claims"
    # the shards open this store; created here, before any of them, so none sees it half made
    UnitStore(units_directory(shared, shard=True), fingerprint, overwrite=overwrite)
    shutil.rmtree(claims, ignore_errors=True)  # an interrupted run's unfinished claims
    processes: list[subprocess.Popen] = []
    logs = []
    started = time.perf_counter()
    try:
        for index in range(jobs):
            log = open(root / f"shard-{index}.log", "w", encoding="utf-8")
            logs.append(log)
            processes.append(subprocess.Popen(
                _shard_command(index, jobs, shared, claims, quick=quick, seed=seed,
                               device=device, data=data, only=only),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        with tqdm(total=jobs, desc=f"shards ({jobs} processes, logs in {root})",
                  unit="shard", dynamic_ncols=True) as bar:
            running = set(range(jobs))
            status_at = time.perf_counter() + _STATUS_SECONDS
            while running:
                time.sleep(_POLL_SECONDS)
                if time.perf_counter() >= status_at:  # each shard's own bar has its ETA
                    status_at += _STATUS_SECONDS
                    for index in sorted(running):
                        tqdm.write(f"shard {index}: "
                                   f"{latest_progress(root / f'shard-{index}.log')[:160]}")
                for index in sorted(running):
                    if processes[index].poll() is None:
                        continue
                    running.discard(index)
                    bar.update(1)
                    tqdm.write(f"shard {index}/{jobs} finished after "
                               f"{time.perf_counter() - started:.0f} s "
                               f"(exit status {processes[index].returncode})")
    except BaseException:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            process.wait()
        raise
    finally:
        for log in logs:
            log.close()
    failed = [index for index, process in enumerate(processes) if process.returncode != 0]
    if failed:
        index = failed[0]
        text = (root / f"shard-{index}.log").read_text(encoding="utf-8", errors="replace")
        raise ShardFailed(f"shard {index} of {jobs} failed (exit status "
                           f"{processes[index].returncode}; log {root}/shard-{index}.log):\n"
                           f"{text[-_LOG_TAIL:]}")
    summary = run_reproduce(out_dir, quick=quick, seed=seed, device=device, overwrite=overwrite,
                            only=only, name=name, data=data, merge=[shared],
                            keep_units=keep_units)
    if not keep_units:
        shutil.rmtree(root, ignore_errors=True)
    return summary
