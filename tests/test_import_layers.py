"""The package's imports only point down its layers (docs/theory-map.md, "Layout").

Each top-level unit of ``sparsecnn`` (a module or a sub-package) has a rank; a unit may import
units of a lower rank, and units of the same rank only without a cycle between them.  The next
import that points back up (a library module borrowing from a study or a command, the report
renderer calling the studies) fails here, before it becomes a tangle.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

import sparsecnn

PACKAGE_ROOT = Path(sparsecnn.__file__).parent

# Lowest first.  Units on one line share a rank.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("_checks", "io", "_version"),
    ("priors", "dictionary", "features"),
    ("inference",),
    ("nn", "dictlearn", "sklearn"),
    ("data", "training", "interpret", "interpretation_report", "anomaly", "robustness"),
    ("report",),
    ("studies",),
    ("commands",),
    ("cli", "__init__", "__main__"),
)
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imported_modules(path: Path) -> list[tuple[str, int]]:
    """``(absolute module, line)`` for every ``sparsecnn`` import in the file at ``path``."""
    relative = path.relative_to(PACKAGE_ROOT.parent).with_suffix("")
    module = ".".join(relative.parts)
    is_package = module.endswith(".__init__")
    package = module[: -len(".__init__")] if is_package else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                # ``from .. import x`` imports the sub-module (or package attribute) x
                names = [f"{target}.{alias.name}" for alias in node.names] if not node.module \
                    else [target]
            else:
                names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [(name, node.lineno) for name in names if name.split(".")[0] == "sparsecnn"]
    return found


def _edges() -> dict[str, dict[str, str]]:
    """unit -> {imported unit: 'file:line' of the first such import}."""
    edges: dict[str, dict[str, str]] = defaultdict(dict)
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        source = _unit(".".join(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts))
        for target_module, line in _imported_modules(path):
            target = _unit(target_module)
            if target == "__version__":  # the version string, defined before any import
                target = "_version"
            if target != source:
                edges[source].setdefault(target, f"{path.relative_to(PACKAGE_ROOT)}:{line}")
    return edges


def test_every_unit_has_a_layer() -> None:
    units = {_unit(".".join(p.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts))
             for p in PACKAGE_ROOT.rglob("*.py")}
    units |= {p.name for p in PACKAGE_ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    missing = sorted(units - set(RANK))
    assert not missing, f"add these units of sparsecnn to LAYERS: {missing}"


def test_imports_point_down() -> None:
    upward = [f"{where}: {source} (rank {RANK[source]}) imports {target} (rank {RANK[target]})"
              for source, targets in _edges().items() for target, where in targets.items()
              if source in RANK and target in RANK and RANK[target] > RANK[source]]
    assert not upward, "imports that point up a layer:\n" + "\n".join(upward)


def test_no_cycle_between_units() -> None:
    edges = _edges()
    state: dict[str, int] = {}

    def visit(unit: str, path: list[str]) -> None:
        state[unit] = 1
        for target in edges.get(unit, {}):
            if state.get(target) == 1:
                cycle = [*path[path.index(target):], target] if target in path else [unit, target]
                pytest.fail("import cycle between units: " + " -> ".join(cycle))
            if target not in state:
                visit(target, [*path, target])
        state[unit] = 2

    for unit in sorted(edges):
        if unit not in state:
            visit(unit, [unit])


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The AST reader resolves relative imports the way Python does (else the tests above
    could pass on a package full of upward imports)."""
    package = tmp_path / "sparsecnn" / "report"
    package.mkdir(parents=True)
    module = package / "runner.py"
    module.write_text("from ..studies import discover\nfrom . import html\nfrom .. import io\n")
    global PACKAGE_ROOT
    saved, PACKAGE_ROOT = PACKAGE_ROOT, tmp_path / "sparsecnn"
    try:
        imported = [name for name, _ in _imported_modules(module)]
    finally:
        PACKAGE_ROOT = saved
    assert imported == ["sparsecnn.studies", "sparsecnn.report.html", "sparsecnn.io"]


def test_library_code_never_borrows_from_a_study_or_a_command() -> None:
    """Only the reproduce command runs the studies, and only the CLI runs the commands: what a
    command and a study both need lives in the library below them."""
    allowed = {"studies": {"commands/reproduce.py"}, "commands": {"cli.py"}}
    borrowed = []
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        relative = path.relative_to(PACKAGE_ROOT).as_posix()
        source = relative.split("/")[0].removesuffix(".py")
        for module, line in _imported_modules(path):
            target = _unit(module)
            if target in allowed and source != target and relative not in allowed[target]:
                borrowed.append(f"{relative}:{line} imports {module}")
    assert not borrowed, "library code borrowed from a study or a command:\n" + "\n".join(borrowed)
