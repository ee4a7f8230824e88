"""The self-contained HTML page of ``sparsecnn reproduce`` (figures embedded as base64 PNG).

The page opens with a summary of the empirical findings (with the reason of every finding that
does not hold or is inconclusive) and, separately, the verified identities; then one section
per paper with each study's claims, a table of the measured values (mean, 95 % interval, n),
the literature's results beside ours, and the figures.  Claims and figures are placed under the
paper they belong to, whichever study measured them.  A ``--quick`` run is marked as a smoke
test throughout; an empirical claim that is not established and gives no reason is flagged.
A study that failed is shown as failed, with its error.
"""

from __future__ import annotations

import base64
import html
import json
import textwrap
from typing import Any

from .study import Claim, Figure, Measurement, Study, StudyOutput

PAPERS = {
    1: ("Paper 1: CNNs as hierarchical sparse coding",
        "J. Bowren, A Sparse Coding Interpretation of Neural Networks and Theoretical "
        "Implications, arXiv 2108.06622 (2021)."),
    2: ("Paper 2: CNNs as hierarchical template matching",
        "V. Nandakumar, A. Tagade, T. Liu, Why do CNNs excel at feature extraction? A "
        "mathematical explanation, arXiv 2307.00919 (2023); TMLR 2024 (rejected); ICLR 2025 "
        "submission."),
}

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d232a;
background:#fafbfc;line-height:1.45}
main{max-width:1100px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:1.7rem;margin:0 0 4px}h2{margin-top:40px;border-bottom:2px solid #d8dee4;
padding-bottom:4px}h3{margin-top:28px}
.meta{color:#57606a;font-size:.9rem}
table{border-collapse:collapse;width:100%;margin:10px 0 18px;font-size:.9rem;background:#fff}
th,td{border:1px solid #d8dee4;padding:6px 8px;text-align:left;vertical-align:top}
th{background:#f0f3f6}
.verdict{font-weight:600;white-space:nowrap;border-radius:4px;padding:1px 6px}
.holds{background:#dafbe1;color:#116329}.does-not-hold{background:#ffebe9;color:#a40e26}
.inconclusive{background:#fff8c5;color:#7d4e00}.failed{background:#ffebe9;color:#a40e26}
.counts span{margin-right:14px}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.82rem}
pre{background:#f6f8fa;padding:8px;overflow-x:auto;border:1px solid #d8dee4}
figure{margin:14px 0;background:#fff;border:1px solid #d8dee4;padding:8px}
figure img{max-width:100%;height:auto}figcaption{color:#57606a;font-size:.88rem}
.measured{max-width:420px}
table.summary td,table.summary th{padding:2px 6px;font-size:.8rem}
table.summary td.id{white-space:nowrap}
.smoke{background:#fff8c5;border:1px solid #d4a72c;padding:8px 12px;border-radius:6px}
.flag{background:#ffebe9;color:#a40e26;font-weight:600}
td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
.reason{color:#3d4650;font-size:.85rem}
"""

SMOKE_TEST = ("smoke test only: a --quick run uses one or two seeds and reduced budgets; one "
              "seed decides nothing, so these verdicts check that the study runs, not the claims")
MISSING_REASON = "no reason given (a study bug: the verdict is unexplained)"
KIND_TITLES = {"empirical": "Empirical findings", "identity": "Verified identities"}



def _shorten(text: str, limit: int = 105) -> str:
    """``text`` cut at a word boundary to ``limit`` characters, for the one-screen summary."""
    return textwrap.shorten(text, width=limit, placeholder=" \u2026")


def _escape(value: Any) -> str:
    return html.escape(str(value))


def _format_number(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.4g}"
        return f"{value:.3e}"
    if isinstance(value, (list, tuple)):
        if len(value) > 8:
            return "[" + ", ".join(_format_number(v) for v in value[:8]) + ", ...]"
        return "[" + ", ".join(_format_number(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_format_number(v)}" for k, v in value.items()) + "}"
    return str(value)


def _measured(measured: dict[str, Any], units: dict[str, str]) -> str:
    rows = []
    for key, value in measured.items():
        unit = f" {units[key]}" if key in units else ""
        rows.append(f"<div><code>{_escape(key)}</code> = {_escape(_format_number(value))}"
                    f"{_escape(unit)}</div>")
    return "".join(rows)


def _verdict(verdict: str, smoke: bool = False) -> str:
    mark = " (smoke test)" if smoke and verdict in ("holds", "does not hold", "inconclusive") \
        else ""
    return (f'<span class="verdict {verdict.replace(" ", "-")}">{_escape(verdict)}{mark}'
            "</span>")


def _reason(claim: Claim) -> str:
    if claim.reason:
        return f"<span class='reason'>{_escape(claim.reason)}</span>"
    if claim.needs_reason:
        return f"<span class='flag'>{_escape(MISSING_REASON)}</span>"
    return ""


def claims_missing_reason(outputs: dict[str, StudyOutput | None]) -> list[str]:
    """Ids of the empirical claims that do not hold or are inconclusive and give no reason."""
    return [claim.id for output in outputs.values() if output for claim in output.claims
            if claim.needs_reason and not claim.reason]


def _number(value: float | None) -> str:
    return "&ndash;" if value is None else _escape(_format_number(float(value)))


def _measurement_table(rows: list[tuple[Measurement, list[str]]]) -> str:
    """One row per distinct measured quantity: mean, 95 % interval, sd, n, unit, claims."""
    parts = ["<table class='measurements'><tr><th>quantity</th><th>mean</th>"
             "<th>95 % interval</th><th>sd</th><th>n</th><th>unit</th><th>claims</th></tr>"]
    for row, claim_ids in rows:
        interval = ("&ndash; (one value)" if row.low is None else
                    f"[{_number(row.low)}, {_number(row.high)}]")
        parts.append(f"<tr><td><code>{_escape(row.name)}</code></td>"
                     f"<td class='num'>{_number(row.mean)}</td><td class='num'>{interval}</td>"
                     f"<td class='num'>{_number(row.sd)}</td><td class='num'>{row.n}</td>"
                     f"<td>{_escape(row.unit)}</td><td>{_escape(', '.join(claim_ids))}</td>"
                     "</tr>")
    parts.append("</table>")
    return "".join(parts)


def _distinct_measurements(claims: list[Claim]) -> list[tuple[Measurement, list[str]]]:
    """The claims' measurements with repeats (same name and numbers) listed once."""
    seen: dict[tuple, tuple[Measurement, list[str]]] = {}
    for claim in claims:
        for row in claim.measurements:
            key = (row.name, row.mean, row.sd, row.n)
            seen.setdefault(key, (row, []))[1].append(claim.id)
    return list(seen.values())


def _claims_table(claims: list[Claim], kind: str, smoke: bool) -> str:
    if kind == "identity":
        parts = ["<table><tr><th>claim</th><th>statement</th><th>checked</th><th>rule</th>"
                 "<th>verdict</th></tr>"]
        for claim in claims:
            parts.append(f"<tr id='{_escape(claim.id)}'><td>{_escape(claim.id)}</td>"
                         f"<td>{_escape(claim.statement)}</td><td class='measured'>"
                         f"{_measured(claim.measured, claim.units)}</td>"
                         f"<td>{_escape(claim.rule)}</td><td>{_verdict(claim.verdict)}"
                         f"<br>{_reason(claim)}</td></tr>")
    else:
        parts = ["<table><tr><th>claim</th><th>statement</th><th>settings</th><th>rule</th>"
                 "<th>verdict and why</th></tr>"]
        for claim in claims:
            parts.append(f"<tr id='{_escape(claim.id)}'><td>{_escape(claim.id)}</td>"
                         f"<td>{_escape(claim.statement)}</td><td class='measured'>"
                         f"{_measured(claim.measured, claim.units)}</td>"
                         f"<td>{_escape(claim.rule)}</td><td>{_verdict(claim.verdict, smoke)}"
                         f"<br>{_reason(claim)}</td></tr>")
    parts.append("</table>")
    return "".join(parts)


def _figure(figure: Figure) -> str:
    encoded = base64.b64encode(figure.png).decode("ascii")
    return (f"<figure><img alt='{_escape(figure.caption)}' src='data:image/png;base64,"
            f"{encoded}'><figcaption>{_escape(figure.caption)}</figcaption></figure>")


def _summary_tables(claims: list[Claim], smoke: bool) -> list[str]:
    parts = []
    for kind, title in KIND_TITLES.items():
        group = sorted((c for c in claims if c.kind == kind), key=lambda c: c.paper)
        if not group:
            continue
        counts = {v: sum(1 for c in group if c.verdict == v)
                  for v in ("holds", "does not hold", "inconclusive")}
        parts.append(f"<h3>{title} ({len(group)})</h3><p class='counts'>"
                     + "".join(f"<span>{_verdict(v, smoke and kind == 'empirical')} {n}</span>"
                               for v, n in counts.items()) + "</p>")
        why = "<th>why (when not established)</th>" if kind == "empirical" else ""
        parts.append("<table class='summary'><tr><th>claim</th><th>paper</th><th>verdict</th>"
                     f"<th>statement (hover for all of it)</th>{why}</tr>")
        for claim in group:
            reason = f"<td>{_reason(claim)}</td>" if kind == "empirical" else ""
            parts.append(
                f"<tr><td class='id'><a href='#{_escape(claim.id)}'>{_escape(claim.id)}</a>"
                f"</td><td>{claim.paper}</td><td>"
                f"{_verdict(claim.verdict, smoke and kind == 'empirical')}</td>"
                f"<td title='{_escape(claim.statement)}'>{_escape(_shorten(claim.statement))}"
                f"</td>{reason}</tr>")
        parts.append("</table>")
    return parts


def _literature_table(outputs: list[StudyOutput], paper_claims: set[str]) -> str:
    rows = [row for output in outputs for row in output.literature
            if row.claim_id in paper_claims]
    if not rows:
        return ""
    parts = ["<h3>The literature beside ours</h3><table><tr><th>claim</th><th>source</th>"
             "<th>setting</th><th>reported</th><th>this run</th></tr>"]
    for row in rows:
        parts.append(f"<tr><td><a href='#{_escape(row.claim_id)}'>{_escape(row.claim_id)}</a>"
                     f"</td><td>{_escape(row.source)}</td><td>{_escape(row.setting)}</td>"
                     f"<td>{_escape(row.reported)}</td><td>{_escape(row.ours)}</td></tr>")
    parts.append("</table>")
    return "".join(parts)


def render_report(meta: dict[str, Any], studies: list[Study],
                  outputs: dict[str, StudyOutput | None], errors: dict[str, str]) -> str:
    """Render the whole page as one HTML string."""
    claims = [claim for study in studies if outputs.get(study.name)
              for claim in outputs[study.name].claims]
    smoke = bool(meta.get("quick"))
    missing = claims_missing_reason(outputs)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>sparsecnn reproduce: {_escape(meta.get('name', ''))}</title>",
        f"<style>{STYLE}</style></head><body><main>",
        "<h1>sparsecnn: the reproduction study</h1>",
        f"<p class='meta'>run <b>{_escape(meta.get('name'))}</b> &middot; "
        f"{'quick' if smoke else 'full'} mode &middot; data {_escape(meta.get('data'))} "
        f"&middot; seed {meta.get('seed')} &middot; {_escape(meta.get('started'))} &middot; "
        f"{meta.get('duration_s', 0):.1f} s &middot; sparsecnn {_escape(meta.get('version'))}"
        f", commit {_escape(str(meta.get('git_commit', 'unknown'))[:12])}</p>",
    ]
    if smoke:
        parts.append(f"<p class='smoke'><b>{_escape(SMOKE_TEST.capitalize())}.</b></p>")
    parts += [
        "<p>Each claim of the two papers (or of docs/theory.md's reconstruction where the papers "
        "are silent) beside what the library measured. Verdicts are computed from the numbers by "
        "the stated rule. <b>Empirical findings</b> depend on data and seeds; every one that "
        "does not hold or is inconclusive says why. <b>Verified identities</b> are true by "
        "construction and are checked exactly (they test the code, not the papers' "
        "hypotheses).</p>",
        "<h2>Summary</h2>",
    ]
    if missing:
        parts.append(f"<p class='flag'>{len(missing)} empirical claim(s) without a reason: "
                     f"{_escape(', '.join(missing))}</p>")
    if errors:
        parts.append(f"<p>{_verdict('failed')} {len(errors)} "
                     f"stud{'y' if len(errors) == 1 else 'ies'}: "
                     + ", ".join(f"<a href='#study-{_escape(n)}'>{_escape(n)}</a>: "
                                 f"{_escape(e.splitlines()[-1] if e else '')}"
                                 for n, e in errors.items()) + "</p>")
    parts += _summary_tables(claims, smoke)

    for paper, (title, citation) in PAPERS.items():
        parts.append(f"<h2>{_escape(title)}</h2><p class='meta'>{_escape(citation)}</p>")
        paper_ids = {c.id for c in claims if c.paper == paper}
        parts.append(_literature_table([o for o in outputs.values() if o], paper_ids))
        for study in studies:
            output = outputs.get(study.name)
            own = study.paper == paper
            if study.name in errors:
                if own:
                    parts.append(f"<h3 id='study-{_escape(study.name)}'>"
                                 f"{_escape(study.title)}</h3><p>{_verdict('failed')} This "
                                 "study raised an error; the other studies still ran.</p>"
                                 f"<pre>{_escape(errors[study.name])}</pre>")
                continue
            if output is None:
                continue
            here = [c for c in output.claims if c.paper == paper]
            figures = [f for f in output.figures if (f.paper or study.paper) == paper]
            if not own and not here and not figures:
                continue
            anchor = f"study-{study.name}" if own else f"study-{study.name}-paper{paper}"
            suffix = "" if own else f" (its paper-{paper} claims)"
            parts.append(f"<h3 id='{_escape(anchor)}'>{_escape(study.title)}{suffix}</h3>")
            if own and output.summary:
                parts.append(f"<p>{_escape(output.summary)}</p>")
            for kind, kind_title in KIND_TITLES.items():
                group = [c for c in here if c.kind == kind]
                if group:
                    parts.append(f"<h4>{kind_title}</h4>" + _claims_table(group, kind, smoke))
            rows = _distinct_measurements(here)
            if rows:
                parts.append("<h4>Measured values</h4>" + _measurement_table(rows))
            parts += [_figure(f) for f in figures]
    parts.append("<h2>Run metadata</h2><pre>"
                 + _escape(json.dumps(meta, indent=2, default=str)) + "</pre>")
    parts.append("</main></body></html>")
    return "\n".join(parts)
