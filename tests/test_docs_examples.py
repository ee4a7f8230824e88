"""Every ```python block of the documentation runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def examples() -> list[tuple[str, str]]:
    found = []
    for page in sorted(DOCS.rglob("*.md")):
        for index, code in enumerate(BLOCK.findall(page.read_text())):
            found.append((f"{page.relative_to(DOCS)}#{index}", code))
    return found


@pytest.mark.parametrize(("where", "code"), examples(), ids=[w for w, _ in examples()])
def test_documentation_example_runs(where: str, code: str, capsys) -> None:
    namespace: dict = {"__name__": "__docs__"}
    exec(compile(code, where, "exec"), namespace)
    assert capsys.readouterr().out.strip(), f"{where} printed nothing"


def test_there_are_examples() -> None:
    assert len(examples()) >= 8
