"""A reproduce run: every discovered study, then ``results.json`` and ``report.html`` written
atomically.

This module sits above the studies and the report: it finds the studies
(:func:`sparsecnn.studies.discover_studies`), runs each under its
:class:`~sparsecnn.report.study.StudyContext` and hands the outputs to the renderer
(:func:`sparsecnn.report.html.render_report`); ``report/`` itself imports nothing from here.

The output directory is assembled in a temporary sibling and renamed into place at the end,
so an interrupted run leaves no half-written report.  A study that raises is recorded as
failed (with its traceback) and the others still run.
"""

from __future__ import annotations

import platform
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
from ..report.study import KINDS, LARGE_TRAIN_IMAGES, Study, StudyContext, StudyOutput
from . import discover_studies

__all__ = ["QUICK_SUBSET", "ReproduceSummary", "run_reproduce"]

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


def _progress(iterable: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)


def run_reproduce(out_dir: str | Path, *, quick: bool = False, seed: int = 0,
                  device: str = "cpu", overwrite: bool = False, only: list[str] | None = None,
                  name: str | None = None, data: str = "digits") -> ReproduceSummary:
    """Run every study (or those named in ``only``) and write the report to ``out_dir``.

    ``data`` is the classification dataset of the studies that train on digits (a name or
    path :func:`sparsecnn.data.load_dataset` reads); it is loaded once here, so a missing or
    damaged dataset is an error before any study runs.
    """
    from ..data import load_dataset

    loaded = load_dataset(data, seed=seed)
    # a quick run on a large dataset trains on a seeded stratified subset, to stay a smoke test
    subset = None
    if quick and str(data) != "digits":
        subset = (min(QUICK_SUBSET[0], loaded.train_labels.shape[0]),
                  min(QUICK_SUBSET[1], loaded.test_labels.shape[0]))
    studies = discover_studies()
    if only:
        known = {s.name for s in studies}
        unknown = sorted(set(only) - known)
        if unknown:
            raise ValueError(f"only names unknown studies {unknown}; known: {sorted(known)}")
        studies = [s for s in studies if s.name in only]
    target = Path(out_dir)
    started = time.perf_counter()
    meta: dict[str, Any] = {
        "name": name or target.name, "quick": quick, "seed": seed, "device": device,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "version": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "threads": torch.get_num_threads(), "data": str(data),
        "verdict_scope": SMOKE_TEST if quick else "full run",
        "git_commit": git_commit(), "packages": package_versions(), "machine": machine(),
    }
    outputs: dict[str, StudyOutput | None] = {}
    errors: dict[str, str] = {}
    timings: dict[str, float] = {}
    with atomic_directory(target, overwrite=overwrite) as staging, \
            tempfile.TemporaryDirectory() as scratch:
        # advance by declared cost (expected seconds), so the ETA weighs the studies still to
        # run by their cost rather than by the first study's time
        # the cost of a study depends on whether the dataset is large (Study.cost_large)
        large = int(loaded.train_labels.shape[0]) >= LARGE_TRAIN_IMAGES
        bar = tqdm(total=sum(s.expected_seconds(quick, large) for s in studies),
                   desc="reproduce",
                   unit="s", dynamic_ncols=True,
                   bar_format="{l_bar}{bar}| {percentage:.0f}% [{elapsed}<{remaining}{postfix}]")
        for study in studies:
            bar.set_postfix_str(study.name)
            outputs[study.name], timings[study.name] = _run_one(
                study, StudyContext(quick=quick, seed=seed, device=device,
                                    scratch_dir=Path(scratch), progress=_progress,
                                    data=str(data), data_subset=subset), errors)
            bar.update(study.expected_seconds(quick, large))
        bar.close()
        meta["duration_s"] = time.perf_counter() - started
        meta["study_seconds"] = timings
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
    verdicts: dict[str, int] = {}
    for claim in claims:
        verdicts[claim["verdict"]] = verdicts.get(claim["verdict"], 0) + 1
    return ReproduceSummary(out_dir=target, n_claims=len(claims), verdicts=verdicts,
                            failed=sorted(errors))


def _run_one(study: Study, context: StudyContext,
             errors: dict[str, str]) -> tuple[StudyOutput | None, float]:
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
    except Exception:  # a failed study is reported, the others still run
        errors[study.name] = traceback.format_exc()
        output = None
    finally:
        torch.set_num_threads(previous_threads)
    return output, time.perf_counter() - start
