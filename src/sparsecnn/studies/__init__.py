"""Studies run by ``sparsecnn reproduce``.

Every module in this package that defines ``STUDY`` (a :class:`sparsecnn.report.study.Study`)
is discovered and run; adding a study is adding a module.
"""

from __future__ import annotations

import importlib
import pkgutil

from ..report.study import Study

__all__ = ["discover_studies"]


def discover_studies() -> list[Study]:
    studies = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        study = getattr(module, "STUDY", None)
        if isinstance(study, Study):
            studies.append(study)
    return sorted(studies, key=lambda s: (s.paper, s.order, s.name))
