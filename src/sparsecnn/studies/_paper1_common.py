"""Statistics and claim helpers shared by the paper-1 model studies (no study here).

Across seeds a number is reported as mean and sample standard deviation (``ddof = 1``; 0 for
one seed).  A comparison "A >= B - margin" uses the per-seed paired differences ``A - B`` and
:func:`sparsecnn.report.study.verdict_with_spread`: it holds when the mean difference plus the
margin is at least one sd above 0, does not hold when it is at least one sd below, and is
inconclusive in between.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..report.study import Claim, verdict_with_spread

__all__ = ["mean_sd", "paired", "shifted", "spread_claim", "spread_rule"]


def mean_sd(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "sd", "n_seeds", "values"}`` of per-seed values."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0 or not np.all(np.isfinite(array)):
        raise ValueError(f"values must be a non-empty list of finite numbers; got {values!r}")
    sd = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return {"mean": float(array.mean()), "sd": sd, "n_seeds": int(array.size),
            "values": [float(v) for v in array]}


def paired(first: Sequence[float], second: Sequence[float]) -> dict[str, Any]:
    """:func:`mean_sd` of the per-seed differences ``first - second``."""
    return mean_sd([a - b for a, b in zip(first, second, strict=True)])


def shifted(stats: dict[str, Any], by: float) -> dict[str, Any]:
    """:func:`mean_sd` statistics of ``values - by`` (the sd is unchanged), for a claim
    "values >= by" judged like a paired difference."""
    return {**stats, "mean": stats["mean"] - by, "values": [v - by for v in stats["values"]]}


def spread_rule(what: str, margin: float) -> str:
    shifted = f"mean + {margin:g}" if margin else "mean"
    return (f"d = {what} per seed (paired); holds if {shifted} >= sd(d), does not hold if "
            f"{shifted} <= -sd(d), inconclusive otherwise (one seed: sd = 0)")


def spread_claim(claim_id: str, statement: str, differences: dict[str, Any], what: str,
                 measured: dict[str, Any], *, margin: float = 0.0,
                 units: dict[str, str] | None = None, paper: int = 1) -> Claim:
    """A claim "A >= B - margin" judged from paired differences (module docstring); ``paper``
    2 for a paper-2 claim measured by the same rule."""
    return Claim(id=claim_id, paper=paper, statement=statement,
                 measured={**measured, "difference": differences, "margin": margin},
                 rule=spread_rule(what, margin),
                 verdict=verdict_with_spread(differences["mean"], differences["sd"],
                                             margin=margin),
                 units=units or {})
