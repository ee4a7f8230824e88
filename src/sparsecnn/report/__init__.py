"""The study contract (:mod:`.study`: claims, verdicts, figures) and the self-contained HTML
report (:mod:`.html`).

A leaf below the studies: every study imports :mod:`.study`, and nothing here imports a study;
the run that discovers the studies and writes the report is
:mod:`sparsecnn.studies.reproduce_run`.
"""

from .study import (
    Claim,
    Figure,
    LiteratureRow,
    Measurement,
    Study,
    StudyContext,
    StudyOutput,
    verdict,
)

__all__ = ["Claim", "Figure", "LiteratureRow", "Measurement", "Study", "StudyContext",
           "StudyOutput", "verdict"]
