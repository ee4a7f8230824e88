"""A reproduce run: every discovered study, then ``results.json`` and ``report.html`` written
atomically.

This module sits above the studies and the report: it finds the studies
(:func:`sparsecnn.studies.discover_studies`), runs each under its
:class:`~sparsecnn.report.study.StudyContext` and hands the outputs to the renderer
(:func:`sparsecnn.report.html.render_report`); ``report/`` itself imports nothing from here.

The output directory is assembled in a temporary sibling and renamed into place at the end,
so an interrupted run leaves no half-written report.  A study that raises is recorded as
failed (with its traceback) and the others still run.

Resuming and sharding (:mod:`sparsecnn.report.units`): every finished unit of a study (one
seed, as the study declares with ``context.unit``) is kept in ``<out>.units/`` while the run
lasts, so running the same command again after an interruption computes only the missing
units; the store is removed once the report is written (``keep_units`` keeps it).  With
``shard=(i, n)`` the run computes only the units shard ``i`` of ``n`` owns, into
``<out>/units/`` with ``<out>/shard.json``, and writes no report; a run with ``merge=[shard
directories]`` imports their units, computes whatever none of them had, and writes the report,
which is the report of a one-process run (the units are deterministic functions of the
configuration, which every shard's fingerprint must match).
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .. import __version__
from ..io import atomic_directory, to_json, write_bytes, write_json, write_text
from ..report.html import SMOKE_TEST, claims_missing_reason, render_report
from ..report.metadata import git_commit, machine, package_versions
from ..report.study import KINDS, Study, StudyContext, StudyOutput
from ..report.units import ShardPlan, UnitDeferred, UnitRunner, UnitStore
from . import discover_studies
from ._paper1_common import is_large

__all__ = ["QUICK_SUBSET", "ReproduceSummary", "configuration", "run_fingerprint",
           "run_reproduce", "units_directory"]

#: (training, test) images a ``--quick`` run keeps of a dataset other than the embedded digits
QUICK_SUBSET = (2000, 1000)


@dataclass
class ReproduceSummary:
    """What the command prints: where the report is, the claim count per verdict, the failed
    studies."""

    out_dir: Path
    n_claims: int
    verdicts: dict[str, int]
    failed: list[str]
    units_loaded: int = 0
    units_computed: int = 0
    deferred: list[str] | None = None  # a shard: the studies left to the merge step


def _progress(iterable: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)


def units_directory(out_dir: str | Path, *, shard: bool = False) -> Path:
    """Where a run writing ``out_dir`` keeps its finished units: ``<out_dir>.units``, or
    ``<out_dir>/units`` for a shard (whose directory holds nothing else but ``shard.json``)."""
    target = Path(out_dir)
    return target / "units" if shard else target.with_name(f"{target.name}.units")


def _source_hash() -> str:
    """SHA-256 over the package's source files: units from other code are never reused."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.suffix in {".py", ".cpp"}):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def run_fingerprint(*, quick: bool, seed: int, device: str, data: str, loaded: Any,
                    subset: tuple[int, int] | None) -> dict[str, Any]:
    """What makes a unit of one run reusable by another: mode, seed, device, dataset (name
    and a SHA-256 of its arrays), package version and source hash."""
    digest = hashlib.sha256()
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        tensor = getattr(loaded, name).detach().cpu().contiguous()
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return {"format": 1, "quick": bool(quick), "seed": int(seed), "device": str(device),
            "data": str(data), "data_sha256": digest.hexdigest(),
            "data_subset": list(subset) if subset else None, "version": __version__,
            "source_sha256": _source_hash()}


def _read_shard(directory: Path) -> dict[str, Any]:
    stamp = directory / "shard.json"
    try:
        shard = json.loads(stamp.read_text(encoding="utf-8"))
        if not isinstance(shard, dict) or "fingerprint" not in shard:
            raise ValueError("no fingerprint")
    except (OSError, ValueError) as error:
        raise ValueError(f"merge: {directory} is not a finished shard ({stamp}: {error})") \
            from None
    return shard


def configuration(data: str, *, quick: bool, seed: int, device: str
                  ) -> tuple[Any, tuple[int, int] | None, dict[str, Any]]:
    """``(loaded, subset, fingerprint)`` of a run: the dataset loaded for ``seed`` (a missing or
    damaged one raises here), the ``(n_train, n_test)`` subset a quick run keeps of a dataset
    other than digits (``None``: all of it), and the :func:`run_fingerprint` its units carry."""
    from ..data import load_dataset

    loaded = load_dataset(data, seed=seed)
    # a quick run on a large dataset trains on a seeded stratified subset, to stay a smoke test
    subset = None
    if quick and str(data) != "digits":
        subset = (min(QUICK_SUBSET[0], loaded.train_labels.shape[0]),
                  min(QUICK_SUBSET[1], loaded.test_labels.shape[0]))
    fingerprint = run_fingerprint(quick=quick, seed=seed, device=device, data=str(data),
                                  loaded=loaded, subset=subset)
    return loaded, subset, fingerprint


def run_reproduce(out_dir: str | Path, *, quick: bool = False, seed: int = 0,
                  device: str = "cpu", overwrite: bool = False, only: list[str] | None = None,
                  name: str | None = None, data: str = "digits",
                  shard: tuple[int, int] | None = None, merge: list[str | Path] | None = None,
                  keep_units: bool = False, claims: str | Path | None = None
                  ) -> ReproduceSummary:
    """Run every study (or those named in ``only``) and write the report to ``out_dir``.

    ``data`` is the classification dataset of the studies that train on digits (a name or
    path :func:`sparsecnn.data.load_dataset` reads); it is loaded once here, so a missing or
    damaged dataset is an error before any study runs.  ``shard=(i, n)`` computes only shard
    ``i``'s units into ``out_dir`` (no report); ``merge`` lists shard directories whose units
    this run reuses.  Finished units are kept in :func:`units_directory` until the report is
    written, so the same call resumes an interrupted run (``keep_units`` keeps them after).
    ``claims`` (shards on one machine sharing ``out_dir``, :mod:`.parallel_run`): a shard owns
    the units it claims first in that directory instead of a fixed share
    (:class:`~sparsecnn.report.units.ShardPlan`).
    """
    if shard is not None and merge:
        raise ValueError("shard and merge exclude each other: run the shards, then merge them")
    if claims is not None and shard is None:
        raise ValueError("claims go with shard: only a shard claims units")
    plan = (ShardPlan(*shard, claims=None if claims is None else str(claims))
            if shard is not None else None)
    loaded, subset, fingerprint = configuration(data, quick=quick, seed=seed, device=device)
    shard_dirs = [Path(m) for m in merge or []]
    shards = [_read_shard(m) for m in shard_dirs]
    for directory, info in zip(shard_dirs, shards, strict=True):
        if info["fingerprint"] != fingerprint:
            differ = sorted(k for k in set(info["fingerprint"]) | set(fingerprint)
                            if info["fingerprint"].get(k) != fingerprint.get(k))
            raise ValueError(f"merge: {directory} was computed with another configuration "
                             f"(differs in {', '.join(differ)}); run the merge with the "
                             "shards' --data/--quick/--seed/--device and the same code")
    studies = discover_studies()
    if only:
        known = {s.name for s in studies}
        unknown = sorted(set(only) - known)
        if unknown:
            raise ValueError(f"only names unknown studies {unknown}; known: {sorted(known)}")
        studies = [s for s in studies if s.name in only]
    target = Path(out_dir)
    store_root = units_directory(target, shard=plan is not None)
    store = UnitStore(store_root, fingerprint, overwrite=overwrite)
    for directory in shard_dirs:
        store.import_from(directory / "units")
    started = time.perf_counter()
    meta: dict[str, Any] = {
        "name": name or target.name, "quick": quick, "seed": seed, "device": device,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "version": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "threads": torch.get_num_threads(), "data": str(data),
        "verdict_scope": SMOKE_TEST if quick else "full run",
        "git_commit": git_commit(), "packages": package_versions(), "machine": machine(),
    }
    if plan is not None:
        return _run_shard(studies, plan, store, target, fingerprint, quick, seed, device,
                          str(data), subset)
    outputs: dict[str, StudyOutput | None] = {}
    errors: dict[str, str] = {}
    timings: dict[str, float] = {}
    with atomic_directory(target, overwrite=overwrite) as staging, \
            tempfile.TemporaryDirectory() as scratch:
        # advance by declared cost (expected seconds), so the ETA weighs the studies still to
        # run by their cost rather than by the first study's time
        # the cost of a study depends on whether the dataset is large (Study.cost_large)
        large = is_large(loaded)
        bar = tqdm(total=sum(s.expected_seconds(quick, large) for s in studies),
                   desc="reproduce",
                   unit="s", dynamic_ncols=True,
                   bar_format="{l_bar}{bar}| {percentage:.0f}% [{elapsed}<{remaining}{postfix}]")
        units: dict[str, dict[str, int]] = {}
        for study in studies:
            bar.set_postfix_str(study.name)
            runner = UnitRunner(study.name, store)
            outputs[study.name], timings[study.name] = _run_one(
                study, _context(quick, seed, device, Path(scratch), str(data), subset, runner),
                errors)
            units[study.name] = {"loaded": runner.loaded, "computed": runner.computed}
            if runner.loaded:
                tqdm.write(f"{study.name}: resumed, {runner.loaded} unit(s) loaded, "
                           f"{runner.computed} computed")
            bar.update(study.expected_seconds(quick, large))
        bar.close()
        meta["duration_s"] = time.perf_counter() - started
        meta["study_seconds"] = timings
        meta["units"] = units
        meta["merged_shards"] = [str(d) for d in shard_dirs]
        claims = [{**claim.to_dict(), "smoke_test": quick} for s in studies
                  if outputs.get(s.name) for claim in outputs[s.name].claims]
        meta["claims_without_reason"] = claims_missing_reason(outputs)
        results = {
            "meta": meta,
            "claims": claims,
            # the verified identities apart from the empirical findings, by claim id
            "claim_groups": {kind: [c["id"] for c in claims if c["kind"] == kind]
                             for kind in KINDS},
            "literature": [row.to_dict() for s in studies if outputs.get(s.name)
                           for row in outputs[s.name].literature],
            "studies": {
                s.name: {"title": s.title, "paper": s.paper,
                         "status": "failed" if s.name in errors else "ok",
                         "error": errors.get(s.name),
                         "seconds": timings.get(s.name),
                         "results": outputs[s.name].results if outputs.get(s.name) else None,
                         "figures": [f"figures/{f.name}.png" for f in
                                     (outputs[s.name].figures if outputs.get(s.name) else [])]}
                for s in studies},
        }
        for s in studies:
            for figure in outputs[s.name].figures if outputs.get(s.name) else []:
                write_bytes(staging / "figures" / f"{figure.name}.png", figure.png)
        write_json(staging / "results.json", results)
        write_text(staging / "report.html", render_report(meta, studies, outputs, errors))
    if not keep_units:
        shutil.rmtree(store_root, ignore_errors=True)
    verdicts: dict[str, int] = {}
    for claim in claims:
        verdicts[claim["verdict"]] = verdicts.get(claim["verdict"], 0) + 1
    return ReproduceSummary(out_dir=target, n_claims=len(claims), verdicts=verdicts,
                            failed=sorted(errors),
                            units_loaded=sum(u["loaded"] for u in units.values()),
                            units_computed=sum(u["computed"] for u in units.values()))


def _run_shard(studies: list[Study], plan: ShardPlan, store: UnitStore, target: Path,
               fingerprint: dict[str, Any], quick: bool, seed: int, device: str, data: str,
               subset: tuple[int, int] | None) -> ReproduceSummary:
    """Compute the units shard ``plan`` owns; ``<target>/shard.json`` marks it finished."""
    errors: dict[str, str] = {}
    deferred: list[str] = []
    loaded = computed = 0
    with tempfile.TemporaryDirectory() as scratch:
        for study in tqdm([s for s in studies if s.has_units],
                          desc=f"shard {plan.index}/{plan.count}", unit="study",
                          dynamic_ncols=True):
            runner = UnitRunner(study.name, store, plan)
            _run_one(study, _context(quick, seed, device, Path(scratch), data, subset, runner),
                     errors, runner)
            loaded += runner.loaded
            computed += runner.computed
            if runner.deferred:
                deferred.append(study.name)
    write_json(target / "shard.json", {
        "fingerprint": fingerprint, "shard": plan.index, "n_shards": plan.count,
        "units": [f"{s}/{k}" for s, k in store.keys()], "failed": sorted(errors),
        "errors": errors})
    return ReproduceSummary(out_dir=target, n_claims=0, verdicts={}, failed=sorted(errors),
                            units_loaded=loaded, units_computed=computed, deferred=deferred)


def _context(quick: bool, seed: int, device: str, scratch: Path, data: str,
             subset: tuple[int, int] | None, runner: UnitRunner) -> StudyContext:
    """A study's context in a run or a shard: the same settings, its own unit runner."""
    return StudyContext(quick=quick, seed=seed, device=device, scratch_dir=scratch,
                        progress=_progress, data=data, data_subset=subset, units=runner)


def _run_one(study: Study, context: StudyContext, errors: dict[str, str],
             shard_runner: UnitRunner | None = None) -> tuple[StudyOutput | None, float]:
    """Run one study; in a shard (``shard_runner``) a study that reaches a unit another shard
    owns stops there without an error (its report is the merge step's)."""
    start = time.perf_counter()
    previous_threads = torch.get_num_threads()
    try:
        torch.manual_seed(context.seed)
        if study.threads is not None:
            torch.set_num_threads(study.threads)
        output = study.run(context)
        if not isinstance(output, StudyOutput):
            raise TypeError(f"study {study.name} returned {type(output).__name__}, "
                            "expected StudyOutput")
        # JSON must be valid before the study counts as done (NaN is refused here).
        to_json({"claims": [c.to_dict() for c in output.claims], "results": output.results})
    except Exception as error:  # a failed study is reported, the others still run
        output = None
        # after a deferred unit, any failure is the placeholder's use (numpy may wrap it)
        if not (shard_runner is not None and (isinstance(error, UnitDeferred)
                                              or shard_runner.deferred)):
            errors[study.name] = traceback.format_exc()
    finally:
        torch.set_num_threads(previous_threads)
    return output, time.perf_counter() - start
