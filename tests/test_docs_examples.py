"""Every ```python block of the documentation and the README runs as written, without a
ConvergenceWarning."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

from sparsecnn import ConvergenceWarning

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def examples() -> list[tuple[str, str]]:
    found = []
    for page in [*sorted(DOCS.rglob("*.md")), ROOT / "README.md"]:
        for index, code in enumerate(BLOCK.findall(page.read_text())):
            found.append((f"{page.relative_to(ROOT)}#{index}", code))
    return found


@pytest.mark.parametrize(("where", "code"), examples(), ids=[w for w, _ in examples()])
def test_documentation_example_runs(where: str, code: str, capsys) -> None:
    namespace: dict = {"__name__": "__docs__"}
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        exec(compile(code, where, "exec"), namespace)
    if where.startswith("docs"):  # the guides show their results; the README is a sketch
        assert capsys.readouterr().out.strip(), f"{where} printed nothing"


def test_there_are_examples() -> None:
    assert len(examples()) >= 8
