"""Statistics and claim helpers shared by the paper-1 model studies (no study here).

Across seeds a number is reported as mean and sample standard deviation (``ddof = 1``; 0 for
one seed).  A comparison "A >= B - margin" uses the per-seed paired differences ``A - B`` and
:func:`sparsecnn.report.study.verdict_with_spread`: it holds when the mean difference plus the
margin is at least ``b = max(sd, t_0.975,n-1 sd / sqrt(n))`` above 0 (one sd, and the 95 %
interval of the mean above 0), does not hold when it is at least ``b`` below, and is
inconclusive in between.

Claims report their per-seed statistics as :class:`~sparsecnn.report.study.Measurement` rows
(:func:`tabulate`) and say why when they do not hold or are inconclusive (:func:`spread_reason`).

How many seeds a comparison needs is decided before running by :func:`seeds_for_power`, the
power of the paired t-test on the per-seed differences (:func:`paired_t_power`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from scipy import stats

from ..report.study import LARGE_TRAIN_IMAGES, Claim, Measurement, verdict_with_spread

__all__ = ["LARGE_TRAIN_IMAGES", "capped_split", "choose_budget", "is_large", "is_stats",
           "mean_sd", "paired", "paired_t_power", "seeds_for_power", "shifted",
           "spread_claim", "spread_reason", "spread_rule", "tabulate", "torch_threads"]

def is_large(split: Any) -> bool:
    """Whether ``split`` (a :class:`sparsecnn.data.DatasetSplit`) has at least
    :data:`~sparsecnn.report.study.LARGE_TRAIN_IMAGES` training images: the budgets of the
    paper-1 model studies are chosen by size, never by the dataset's name (digits: ~900, a quick
    run's subset: 2000, Fashion-MNIST: 60000)."""
    return int(split.train_labels.shape[0]) >= LARGE_TRAIN_IMAGES


def choose_budget(context: Any, quick: Any, full: Any, large: Any) -> Any:
    """The budget of a run: ``quick`` in quick mode (whose large datasets are already cut to
    a small subset), ``large`` in full mode on a large dataset (:func:`is_large` of the
    context's split for its seed), ``full`` otherwise -- so the embedded digits keep ``full``."""
    if context.quick:
        return quick
    return large if is_large(context.classification_split(context.seed)) else full


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (``None``: unchanged), restored after.
    The large-dataset budgets use the reference machine's 2 cores: their 28x28 convolutions on
    60000 images are large enough for a second thread to pay, unlike digits' tiny models."""
    import torch

    previous = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def capped_split(context: Any, seed: int, cap: tuple[int, int] | None, dtype: Any = None) -> Any:
    """The context's split for ``seed``, cut to at most ``cap = (n_train, n_test)`` images by
    a seeded stratified subset (:func:`sparsecnn.data.split.subset_split`); ``None``: whole."""
    split = context.classification_split(seed, dtype=dtype)
    if cap is None:
        return split
    from ..data.split import subset_split

    n_train, n_test = int(split.train_labels.shape[0]), int(split.test_labels.shape[0])
    keep_train = cap[0] if cap[0] < n_train else None
    keep_test = cap[1] if cap[1] < n_test else None
    return subset_split(split, keep_train, keep_test, seed)


_STATS_KEYS = frozenset({"mean", "sd", "n_seeds", "values"})


def mean_sd(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "sd", "n_seeds", "values"}`` of per-seed values."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0 or not np.all(np.isfinite(array)):
        raise ValueError(f"values must be a non-empty list of finite numbers; got {values!r}")
    sd = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return {"mean": float(array.mean()), "sd": sd, "n_seeds": int(array.size),
            "values": [float(v) for v in array]}


def is_stats(value: Any) -> bool:
    """Whether ``value`` is a :func:`mean_sd` result."""
    return isinstance(value, dict) and _STATS_KEYS <= set(value)


def tabulate(measured: dict[str, Any], units: dict[str, str] | None = None
             ) -> dict[str, Any]:
    """``measured`` split into ``Claim`` keyword arguments: every :func:`mean_sd` entry (also one
    level down, as ``"outer.inner"``) becomes a :class:`Measurement` row, the rest stays in
    ``measured`` (settings, counts, flags)."""
    units = units or {}
    scalars: dict[str, Any] = {}
    rows: list[Measurement] = []
    for key, value in measured.items():
        if is_stats(value):
            rows.append(Measurement.from_values(key, value["values"], units.get(key, "")))
        elif isinstance(value, dict) and value and all(is_stats(v) for v in value.values()):
            rows += [Measurement.from_values(f"{key}.{inner}", stats["values"],
                                             units.get(key, ""))
                     for inner, stats in value.items()]
        else:
            scalars[key] = value
    return {"measured": scalars, "measurements": rows}


def paired(first: Sequence[float], second: Sequence[float]) -> dict[str, Any]:
    """:func:`mean_sd` of the per-seed differences ``first - second``."""
    return mean_sd([a - b for a, b in zip(first, second, strict=True)])


def shifted(stats: dict[str, Any], by: float) -> dict[str, Any]:
    """:func:`mean_sd` statistics of ``values - by`` (the sd is unchanged), for a claim
    "values >= by" judged like a paired difference."""
    return {**stats, "mean": stats["mean"] - by, "values": [v - by for v in stats["values"]]}


def spread_rule(what: str, margin: float) -> str:
    shifted = f"mean + {margin:g}" if margin else "mean"
    return (f"d = {what} per seed (paired); holds if {shifted} >= b, does not hold if "
            f"{shifted} <= -b, inconclusive otherwise, where b = max(sd(d), t_0.975,n-1 sd(d) / "
            "sqrt(n)): one sd and the 95 % interval of the mean on the same side (one seed: "
            "b = 0, the sign decides)")


def spread_reason(differences: dict[str, Any], what: str, margin: float = 0.0) -> str:
    """Why "d >= -margin" is not established, from the numbers of d (:func:`spread_rule`); ""
    when it holds."""
    mean, sd, n = differences["mean"], differences["sd"], differences["n_seeds"]
    shifted = mean + margin
    verdict = verdict_with_spread(mean, sd, margin=margin, n=n)
    threshold = f"{-margin:+.3g}" if margin else "0"
    if verdict == "holds":
        return ""
    interval = Measurement.from_values("d", differences["values"])
    ci = ("" if interval.low is None else
          f"; its 95 % interval [{interval.low:+.3g}, {interval.high:+.3g}]")
    if n == 1:
        return (f"d = {what} is {mean:+.3g} on the one seed, below the threshold {threshold}; "
                "with one seed the sign decides (no spread is measured).")
    if verdict == "does not hold":
        return (f"d = {what} has mean {mean:+.3g} and sd {sd:.3g} over {n} seeds: the mean is "
                f"{-shifted:.3g} below the threshold {threshold}, at least one sd{ci}.")
    if abs(shifted) >= sd:  # beyond one sd, but the interval of the mean reaches the threshold
        return (f"d = {what} has mean {mean:+.3g} and sd {sd:.3g} over {n} seeds: the mean is "
                f"{abs(shifted):.3g} {'above' if shifted > 0 else 'below'} the threshold "
                f"{threshold}, more than one sd, but its 95 % interval [{interval.low:+.3g}, "
                f"{interval.high:+.3g}] reaches it: {n} seeds are too few to settle the sign.")
    return (f"d = {what} has mean {mean:+.3g} and sd {sd:.3g} over {n} seeds: the band "
            f"[{mean - sd:+.3g}, {mean + sd:+.3g}] straddles the threshold {threshold}{ci}; "
            "the effect, if any, is smaller than the seed-to-seed spread.")


def spread_claim(claim_id: str, statement: str, differences: dict[str, Any], what: str,
                 measured: dict[str, Any], *, margin: float = 0.0,
                 units: dict[str, str] | None = None, paper: int = 1) -> Claim:
    """A claim "A >= B - margin" judged from paired differences (module docstring); ``paper``
    2 for a paper-2 claim measured by the same rule.  Its per-seed statistics (including
    ``d``) become measurement rows, and a claim that is not established gets its reason."""
    return Claim(id=claim_id, paper=paper, statement=statement,
                 **tabulate({**measured, "difference": differences, "margin": margin}, units),
                 rule=spread_rule(what, margin),
                 verdict=verdict_with_spread(differences["mean"], differences["sd"],
                                             margin=margin, n=differences["n_seeds"]),
                 units=units or {}, reason=spread_reason(differences, what, margin))


_ALTERNATIVES = ("two-sided", "greater")


def _check_power_arguments(sd: float, effect: float, alpha: float, alternative: str) -> None:
    for name, value in (("sd", sd), ("effect", effect)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise ValueError(f"alpha must be in (0, 1); got {alpha!r}")
    if alternative not in _ALTERNATIVES:
        raise ValueError(f"alternative must be one of {_ALTERNATIVES}; got {alternative!r}")


def paired_t_power(n: int, sd: float, effect: float, *, alpha: float = 0.05,
                   alternative: str = "two-sided") -> float:
    """Power of the paired t-test of ``H0: mean(d) = 0`` with ``n`` pairs whose differences are
    normal with mean ``effect`` and standard deviation ``sd``.

    The statistic ``t = mean(d) / (s / sqrt(n))`` follows a noncentral t distribution with
    ``n - 1`` degrees of freedom and noncentrality ``effect sqrt(n) / sd``, so with
    ``c = t_{1 - alpha/2, n-1}`` (two-sided) the power is
    ``P(t > c) + P(t < -c) = 1 - F_nct(c) + F_nct(-c)``, and with ``c = t_{1 - alpha, n-1}``
    (``alternative="greater"``) it is ``1 - F_nct(c)``.
    """
    if not (isinstance(n, (int, np.integer)) and n >= 2):
        raise ValueError(f"n must be an integer >= 2 (a paired t-test needs a spread); got {n!r}")
    _check_power_arguments(sd, effect, alpha, alternative)
    df, noncentrality = n - 1, effect * math.sqrt(n) / sd
    if alternative == "greater":
        power = stats.nct.sf(stats.t.ppf(1 - alpha, df), df, noncentrality)
    else:
        critical = stats.t.ppf(1 - alpha / 2, df)
        # P(t < -c | ncp) = P(t > c | -ncp): SciPy's nct.cdf returns nan deep in the lower tail
        # (large ncp, few df), its sf of the mirrored problem does not
        power = (stats.nct.sf(critical, df, noncentrality)
                 + stats.nct.sf(critical, df, -noncentrality))
    if not math.isfinite(power):
        raise ArithmeticError(f"the noncentral t power is not finite for n={n}, sd={sd!r}, "
                              f"effect={effect!r}, alpha={alpha!r}")
    return float(power)


def seeds_for_power(sd: float, effect: float, *, alpha: float = 0.05, power: float = 0.8,
                    alternative: str = "two-sided", max_n: int = 10_000) -> int:
    """The smallest number of seeds ``n >= 2`` at which the paired t-test (:func:`paired_t_power`)
    detects a mean per-seed difference ``effect`` with spread ``sd`` with at least ``power``.

    The same ``n`` makes the 95 % interval of the mean difference exclude ``effect`` with
    probability ``power`` when the true difference is 0 (two-sided ``alpha = 0.05``), so it is
    also the number of seeds needed to conclude "no effect as large as ``effect``".
    Power increases with ``n``, so the answer is found by doubling and bisection; a need above
    ``max_n`` raises (the effect is too small for seeds to resolve).
    """
    _check_power_arguments(sd, effect, alpha, alternative)
    if not (isinstance(power, (int, float)) and 0 < power < 1):
        raise ValueError(f"power must be in (0, 1); got {power!r}")

    def enough(n: int) -> bool:
        return paired_t_power(n, sd, effect, alpha=alpha, alternative=alternative) >= power

    if enough(2):
        return 2
    low, high = 2, 4  # invariant: not enough(low)
    while not enough(high):
        if high >= max_n:
            raise ValueError(f"more than max_n={max_n} seeds are needed to detect effect="
                             f"{effect!r} with sd={sd!r} at power {power!r}")
        low, high = high, min(2 * high, max_n)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high
