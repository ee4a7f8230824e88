"""Studies run by ``sparsecnn reproduce``.

Every module (or subpackage) in this package that defines ``STUDY`` (a
:class:`sparsecnn.report.study.Study`) is discovered and run; adding a study is adding a module.
Modules without ``STUDY`` are helpers: :mod:`.reproduce_run` runs the studies and writes the
report, the ``_``-prefixed ones hold what several studies share.
"""

from __future__ import annotations

import importlib
import pkgutil

from ..report.study import Study

__all__ = ["discover_studies"]


def discover_studies() -> list[Study]:
    """Every ``STUDY`` defined in this package, sorted by paper, ``order`` and name."""
    studies = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        study = getattr(module, "STUDY", None)
        if isinstance(study, Study):
            studies.append(study)
    return sorted(studies, key=lambda s: (s.paper, s.order, s.name))
