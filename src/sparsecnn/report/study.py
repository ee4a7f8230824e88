"""What a study returns to the report: claims with verdicts computed from numbers, figures.

A study is a function ``run(context) -> StudyOutput``.  Each claim carries the statement from
the paper (or docs/theory.md), the measured numbers, the rule that turns them into a verdict, and
the verdict itself -- always computed by :func:`verdict`, never written by hand.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VERDICTS = ("holds", "does not hold", "inconclusive")


def verdict(passed: bool | None) -> str:
    """``True`` -> "holds", ``False`` -> "does not hold", ``None`` -> "inconclusive"."""
    if passed is None:
        return "inconclusive"
    return "holds" if passed else "does not hold"


def verdict_with_spread(mean_difference: float, sd: float, *, margin: float = 0.0) -> str:
    """Verdict for "A >= B - margin" from the mean and sd of paired differences ``A - B``:
    holds if ``mean + margin >= sd`` and does not hold if ``mean + margin < -sd``... more
    precisely holds when the difference exceeds ``-margin`` by at least one sd, fails when it is
    below ``-margin`` by at least one sd, and is inconclusive in between."""
    shifted = mean_difference + margin
    if shifted >= sd:
        return "holds"
    if shifted <= -sd:
        return "does not hold"
    return "inconclusive"


@dataclass
class Claim:
    """One claim beside its measurement.

    ``measured`` maps names to numbers (JSON-serializable; give units in the name or in
    ``units``), ``rule`` states how the verdict follows from them.
    """

    id: str
    paper: int
    statement: str
    measured: dict[str, Any]
    rule: str
    verdict: str
    units: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}; got {self.verdict!r}")
        if self.paper not in (1, 2):
            raise ValueError(f"paper must be 1 or 2; got {self.paper!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "paper": self.paper, "statement": self.statement,
                "measured": self.measured, "units": self.units, "rule": self.rule,
                "verdict": self.verdict}


@dataclass
class Figure:
    """A PNG figure with a caption."""

    name: str
    caption: str
    png: bytes

    @classmethod
    def from_matplotlib(cls, name: str, caption: str, figure: Any) -> Figure:
        import matplotlib.pyplot as plt

        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        plt.close(figure)
        return cls(name=name, caption=caption, png=buffer.getvalue())


@dataclass
class StudyOutput:
    claims: list[Claim] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    summary: str = ""


@dataclass
class StudyContext:
    """What a study may use: mode, seed, device, a scratch directory and a progress bar."""

    quick: bool
    seed: int
    device: str
    scratch_dir: Path
    progress: Callable[..., Iterable] = field(default=lambda iterable, **_: iterable)


@dataclass
class Study:
    """A named study of one paper; ``order`` sorts studies within the report.

    ``threads``: torch intra-op threads while the study runs (restored afterwards); tiny models
    run faster on one thread, since waiting threads spin on a shared machine.  ``None`` keeps
    the process setting.

    ``cost``: expected seconds ``(quick, full)`` on the reference machine (2 cores); only the
    ratios between studies matter.  The reproduce progress bar advances by each study's cost,
    so its ETA after the first study is ``elapsed * remaining cost / done cost`` instead of
    the first study's time times the number of studies.
    """

    name: str
    paper: int
    title: str
    run: Callable[[StudyContext], StudyOutput]
    order: int = 100
    threads: int | None = None
    cost: tuple[float, float] = (10.0, 60.0)

    def __post_init__(self) -> None:
        cost = tuple(self.cost)
        if len(cost) != 2 or not all(isinstance(c, (int, float)) and not isinstance(c, bool)
                                     and math.isfinite(c) and c > 0 for c in cost):
            raise ValueError(f"study {self.name!r}: cost must be (quick, full) expected "
                             f"seconds, two finite numbers > 0; got {self.cost!r}")
        self.cost = (float(cost[0]), float(cost[1]))

    def expected_seconds(self, quick: bool) -> float:
        """The declared cost of a quick or a full run."""
        return self.cost[0] if quick else self.cost[1]
