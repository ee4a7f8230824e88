"""The study contract of :mod:`sparsecnn.report`: verdicts are computed, never written by hand,
and the package is a leaf below the studies."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sparsecnn.report
from sparsecnn.report.study import Claim, verdict, verdict_with_spread


def test_verdict_maps_pass_fail_unknown() -> None:
    assert (verdict(True), verdict(False), verdict(None)) == \
        ("holds", "does not hold", "inconclusive")


@pytest.mark.parametrize(("mean", "sd", "margin", "expected"), [
    (0.3, 0.1, 0.0, "holds"), (-0.3, 0.1, 0.0, "does not hold"), (0.05, 0.1, 0.0, "inconclusive"),
    (-0.01, 0.0, 0.02, "holds"), (0.0, 0.0, 0.0, "holds"),
])
def test_verdict_with_spread(mean: float, sd: float, margin: float, expected: str) -> None:
    assert verdict_with_spread(mean, sd, margin=margin) == expected


def test_claim_refuses_an_unknown_verdict_or_paper() -> None:
    with pytest.raises(ValueError, match="verdict must be one of"):
        Claim("id", 1, "statement", {}, "rule", "probably")
    with pytest.raises(ValueError, match="paper must be 1 or 2"):
        Claim("id", 3, "statement", {}, "rule", "holds")


def test_report_imports_no_study_and_no_command() -> None:
    # report/ is the leaf the studies build on; an import of studies/ or commands/ from here
    # would make the two packages depend on each other again.
    package = Path(sparsecnn.report.__file__).parent
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                names = [f"{module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                assert not any(part in ("studies", "commands", "cli")
                               for part in name.split(".")), (path.name, name)
