"""What a study returns to the report: claims with verdicts computed from numbers, figures.

A study is a function ``run(context) -> StudyOutput``.  Each claim carries the statement from
the paper (or docs/theory.md), the measured numbers (repeated measurements as
:class:`Measurement`: mean, 95 % interval, n), the rule that turns them into a verdict, and
the verdict itself -- always computed by :func:`verdict`, never written by hand.  Claims are of
two kinds: verified identities (true by construction, checked exactly) and empirical findings;
an empirical finding that does not hold or is inconclusive carries a ``reason`` computed from
its numbers.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

VERDICTS = ("holds", "does not hold", "inconclusive")
#: "identity": true by construction or by an exact theorem, checked to a tolerance (no
#: statistics); "empirical": a finding judged from measured, seed-dependent numbers.
KINDS = ("identity", "empirical")


def verdict(passed: bool | None) -> str:
    """``True`` -> "holds", ``False`` -> "does not hold", ``None`` -> "inconclusive"."""
    if passed is None:
        return "inconclusive"
    return "holds" if passed else "does not hold"


def spread_band(sd: float, n: int | None) -> float:
    """The half-width a paired difference must clear (:func:`verdict_with_spread`): one
    standard deviation of the per-seed differences, or the half-width ``t_{0.975, n-1} sd /
    sqrt(n)`` of its 95 % Student-t interval when that is wider (``n`` <= 7 seeds); ``sd``
    alone with one seed or ``n`` unknown."""
    if n is not None and n >= 2:
        return max(sd, float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n))
    return sd


def verdict_with_spread(mean_difference: float, sd: float, *, margin: float = 0.0,
                        n: int | None = None) -> str:
    """Verdict for "A >= B - margin" from the mean and sd of ``n`` paired differences
    ``A - B``: holds when ``mean + margin`` is at least :func:`spread_band` above 0 (one sd
    above the threshold *and* the 95 % interval of the mean above it), does not hold when it
    is that far below, inconclusive in between.  With few seeds the interval is the stricter
    test: a one-sd band over 2-3 seeds is a t statistic of only 1.4-1.7."""
    shifted = mean_difference + margin
    band = spread_band(sd, n)
    if shifted >= band:
        return "holds"
    if shifted <= -band:
        return "does not hold"
    return "inconclusive"


@dataclass(frozen=True)
class Measurement:
    """A number measured over ``n`` repetitions: ``mean`` and its 95 % Student-t interval
    ``mean +- t_{0.975, n-1} sd / sqrt(n)`` (``sd`` with ``ddof = 1``).

    With one repetition there is no interval (``low = high = None``): one seed says nothing
    about the spread.
    """

    name: str
    mean: float
    sd: float
    n: int
    low: float | None
    high: float | None
    unit: str = ""

    @classmethod
    def from_values(cls, name: str, values: Sequence[float], unit: str = "") -> Measurement:
        array = np.asarray(values, dtype=np.float64).ravel()
        if array.size == 0 or not np.all(np.isfinite(array)):
            raise ValueError(f"values of {name!r} must be a non-empty sequence of finite "
                             f"numbers; got {values!r}")
        mean = float(array.mean())
        if array.size == 1:
            return cls(name, mean, 0.0, 1, None, None, unit)
        sd = float(array.std(ddof=1))
        half = float(stats.t.ppf(0.975, array.size - 1)) * sd / math.sqrt(array.size)
        return cls(name, mean, sd, int(array.size), mean - half, mean + half, unit)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "mean": self.mean, "sd": self.sd, "n": self.n,
                "ci95": None if self.low is None else [self.low, self.high],
                "unit": self.unit}


@dataclass
class Claim:
    """One claim beside its measurement.

    ``measured`` maps names to scalars and settings (JSON-serializable; give units in the name
    or in ``units``); ``measurements`` holds the numbers measured over seeds (rendered as one
    table); ``rule`` states how the verdict follows from them.  ``kind`` is ``"identity"`` for
    what is true by construction (checked exactly) and ``"empirical"`` for findings; ``reason``
    says, from the numbers, why a claim does not hold or is inconclusive (the report flags an
    empirical claim that lacks one).
    """

    id: str
    paper: int
    statement: str
    measured: dict[str, Any]
    rule: str
    verdict: str
    units: dict[str, str] = field(default_factory=dict)
    kind: str = "empirical"
    reason: str = ""
    measurements: list[Measurement] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}; got {self.verdict!r}")
        if self.paper not in (1, 2):
            raise ValueError(f"paper must be 1 or 2; got {self.paper!r}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}; got {self.kind!r}")

    @property
    def needs_reason(self) -> bool:
        """An empirical claim that does not hold or is inconclusive must say why."""
        return self.kind == "empirical" and self.verdict != "holds"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "paper": self.paper, "kind": self.kind,
                "statement": self.statement,
                "measurements": [m.to_dict() for m in self.measurements],
                "measured": self.measured, "units": self.units, "rule": self.rule,
                "verdict": self.verdict, "reason": self.reason}


@dataclass
class Figure:
    """A PNG figure with a caption; ``paper`` places it under the other paper's section when a
    study measures claims of both (``None``: the study's own paper)."""

    name: str
    caption: str
    png: bytes
    paper: int | None = None

    def __post_init__(self) -> None:
        if self.paper not in (None, 1, 2):
            raise ValueError(f"paper must be None (the study's paper), 1 or 2; got "
                             f"{self.paper!r}")

    @classmethod
    def from_matplotlib(cls, name: str, caption: str, figure: Any, *,
                        paper: int | None = None) -> Figure:
        import matplotlib.pyplot as plt

        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        plt.close(figure)
        return cls(name=name, caption=caption, png=buffer.getvalue(), paper=paper)


@dataclass(frozen=True)
class LiteratureRow:
    """The literature's result beside ours for one claim: ``source`` is the citation (paper and
    table or section), ``reported`` what it reports -- a number only when verified against that
    table, otherwise the finding in words -- and ``ours`` the matching number of this run."""

    claim_id: str
    source: str
    setting: str
    reported: str
    ours: str

    def to_dict(self) -> dict[str, str]:
        return {"claim_id": self.claim_id, "source": self.source, "setting": self.setting,
                "reported": self.reported, "ours": self.ours}


@dataclass
class StudyOutput:
    claims: list[Claim] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    literature: list[LiteratureRow] = field(default_factory=list)


@dataclass
class StudyContext:
    """What a study may use: mode, seed, device, a scratch directory, a progress bar and the
    classification dataset (``data``: ``"digits"``, the embedded default, or any name or path
    :func:`sparsecnn.data.load_dataset` reads).

    Studies that train or evaluate classifiers on digits load their split through
    :meth:`classification_split`, so ``--data`` reaches them; ``data_subset`` caps the
    training/test sizes (``None``: the whole dataset).
    """

    quick: bool
    seed: int
    device: str
    scratch_dir: Path
    progress: Callable[..., Iterable] = field(default=lambda iterable, **_: iterable)
    data: str = "digits"
    data_subset: tuple[int, int] | None = None
    units: Any = None  # a report.units.UnitRunner, set by the reproduce run

    def unit(self, key: str, compute: Callable[[], Any]) -> Any:
        """The result of ``compute()``: one resumable unit of the study (usually one seed),
        which must return data (see :mod:`sparsecnn.report.units`).  A reproduce run keeps
        finished units on disk and reads them back when resumed, and a shard computes only the
        units it owns; without a run the value is still passed through the same exact
        encode/decode round trip, so the code after a unit sees the same types either way."""
        if self.units is None:
            from .units import round_trip

            return round_trip(compute(), f"unit {key!r}")
        return self.units(key, compute)

    def classification_split(self, seed: int, dtype: Any = None) -> Any:
        """The ``seed``-th split of :attr:`data` (a :class:`sparsecnn.data.DatasetSplit`)."""
        import torch

        from ..data import load_dataset

        n_train, n_test = self.data_subset or (None, None)
        return load_dataset(self.data, seed=seed, dtype=dtype or torch.float32,
                            n_train=n_train, n_test=n_test)


#: a classification dataset is *large* (literature scale: MNIST, Fashion-MNIST, KMNIST, or a
#: user dataset of similar size) from this many training images on (digits: ~900)
LARGE_TRAIN_IMAGES = 20_000


@dataclass
class Study:
    """A named study of one paper; ``order`` sorts studies within the report.

    ``threads``: torch intra-op threads while the study runs (restored afterwards); tiny models
    run faster on one thread, since waiting threads spin on a shared machine.  ``None`` keeps
    the process setting.

    ``cost``: expected seconds ``(quick, full)`` on the reference machine (2 cores); only the
    ratios between studies matter.  The reproduce progress bar advances by each study's cost,
    so its ETA after the first study is ``elapsed * remaining cost / done cost`` instead of
    the first study's time times the number of studies.  ``cost_large``: the same ``(quick,
    full)`` pair for a run on a large classification dataset (at least
    :data:`LARGE_TRAIN_IMAGES` training images, e.g. Fashion-MNIST), whose studies train on
    more and larger images; ``None``: the study's cost does not depend on the dataset.

    ``has_units``: whether the study splits its work into resumable units (one per seed,
    :meth:`StudyContext.unit`); a study that does not is run whole by the merge step of a
    sharded run and again by a resumed one.
    """

    name: str
    paper: int
    title: str
    run: Callable[[StudyContext], StudyOutput]
    order: int = 100
    threads: int | None = None
    cost: tuple[float, float] = (10.0, 60.0)
    cost_large: tuple[float, float] | None = None
    #: False for a study without units (``context.unit``): a shard skips it, the merge step
    #: and a resumed run compute it whole
    has_units: bool = True

    def __post_init__(self) -> None:
        for name in ("cost", "cost_large"):
            value = getattr(self, name)
            if value is None and name == "cost_large":
                continue
            cost = tuple(value)
            if len(cost) != 2 or not all(isinstance(c, (int, float)) and not isinstance(c, bool)
                                         and math.isfinite(c) and c > 0 for c in cost):
                raise ValueError(f"study {self.name!r}: {name} must be (quick, full) expected "
                                 f"seconds, two finite numbers > 0; got {value!r}")
            setattr(self, name, (float(cost[0]), float(cost[1])))

    def expected_seconds(self, quick: bool, large: bool = False) -> float:
        """The declared cost of a quick or a full run; ``large``: on a large dataset."""
        cost = self.cost_large if large and self.cost_large is not None else self.cost
        return cost[0] if quick else cost[1]
