"""The self-contained HTML page of ``sparsecnn reproduce`` (figures embedded as base64 PNG).

The page opens with a one-screen summary table of every claim and its verdict, then one
section per paper with each study's claims, numbers and figures.  A study that failed is
shown as failed, with its error.
"""

from __future__ import annotations

import base64
import html
import json
import textwrap
from typing import Any

from .study import Study, StudyOutput

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
"""


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


def _verdict(verdict: str) -> str:
    return f'<span class="verdict {verdict.replace(" ", "-")}">{_escape(verdict)}</span>'


def render_report(meta: dict[str, Any], studies: list[Study],
                  outputs: dict[str, StudyOutput | None], errors: dict[str, str]) -> str:
    """Render the whole page as one HTML string."""
    claims = [(study, claim) for study in studies if outputs.get(study.name)
              for claim in outputs[study.name].claims]
    counts = {v: sum(1 for _, c in claims if c.verdict == v)
              for v in ("holds", "does not hold", "inconclusive")}
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>sparsecnn reproduce: {_escape(meta.get('name', ''))}</title>",
        f"<style>{STYLE}</style></head><body><main>",
        "<h1>sparsecnn: the reproduction study</h1>",
        f"<p class='meta'>run <b>{_escape(meta.get('name'))}</b> &middot; "
        f"{'quick' if meta.get('quick') else 'full'} mode &middot; seed {meta.get('seed')} "
        f"&middot; {_escape(meta.get('started'))} &middot; {meta.get('duration_s', 0):.1f} s "
        f"&middot; sparsecnn {_escape(meta.get('version'))}, torch "
        f"{_escape(meta.get('torch'))}</p>",
        "<p>Each claim of the two papers (or of docs/theory.md's reconstruction where the papers "
        "are silent) beside what the library measured on embedded data. Verdicts are computed "
        "from the numbers by the stated rule.</p>",
        "<h2>Summary</h2><p class='counts'>"
        + "".join(f"<span>{_verdict(v)} {n}</span>" for v, n in counts.items())
        + (f"<span>{_verdict('failed')} {len(errors)} stud{'y' if len(errors) == 1 else 'ies'}"
           "</span>" if errors else "") + "</p>",
        "<table class='summary'><tr><th>claim</th><th>paper</th><th>verdict</th>"
        "<th>statement (hover for all of it; click the claim for its numbers)</th></tr>",
    ]
    for _study, claim in sorted(claims, key=lambda pair: pair[1].paper):
        parts.append(f"<tr><td class='id'><a href='#{_escape(claim.id)}'>{_escape(claim.id)}"
                     f"</a></td><td>{claim.paper}</td><td>{_verdict(claim.verdict)}</td>"
                     f"<td title='{_escape(claim.statement)}'>"
                     f"{_escape(_shorten(claim.statement))}</td></tr>")
    for name, error in errors.items():
        parts.append(f"<tr><td>{_escape(name)}</td><td></td><td>study failed: "
                     f"{_escape(error.splitlines()[-1] if error else '')}</td>"
                     f"<td>{_verdict('failed')}</td></tr>")
    parts.append("</table>")

    for paper, (title, citation) in PAPERS.items():
        parts.append(f"<h2>{_escape(title)}</h2><p class='meta'>{_escape(citation)}</p>")
        for study in (s for s in studies if s.paper == paper):
            parts.append(f"<h3 id='study-{_escape(study.name)}'>{_escape(study.title)}</h3>")
            if study.name in errors:
                parts.append(f"<p>{_verdict('failed')} This study raised an error; the other "
                             f"studies still ran.</p><pre>{_escape(errors[study.name])}</pre>")
                continue
            output = outputs.get(study.name)
            if output is None:
                continue
            if output.summary:
                parts.append(f"<p>{_escape(output.summary)}</p>")
            if output.claims:
                parts.append("<table><tr><th>claim</th><th>statement</th><th>measured</th>"
                             "<th>rule</th><th>verdict</th></tr>")
                for claim in output.claims:
                    parts.append(
                        f"<tr id='{_escape(claim.id)}'><td>{_escape(claim.id)}</td>"
                        f"<td>{_escape(claim.statement)}</td><td class='measured'>"
                        f"{_measured(claim.measured, claim.units)}</td>"
                        f"<td>{_escape(claim.rule)}</td><td>{_verdict(claim.verdict)}</td></tr>")
                parts.append("</table>")
            for figure in output.figures:
                encoded = base64.b64encode(figure.png).decode("ascii")
                parts.append(f"<figure><img alt='{_escape(figure.caption)}' "
                             f"src='data:image/png;base64,{encoded}'><figcaption>"
                             f"{_escape(figure.caption)}</figcaption></figure>")
    parts.append("<h2>Run metadata</h2><pre>"
                 + _escape(json.dumps(meta, indent=2, default=str)) + "</pre>")
    parts.append("</main></body></html>")
    return "\n".join(parts)
