"""Figures and the self-contained HTML report of ``sparsecnn reproduce``."""

from .study import Claim, Figure, Study, StudyContext, StudyOutput, verdict

__all__ = ["Claim", "Figure", "Study", "StudyContext", "StudyOutput", "verdict"]
