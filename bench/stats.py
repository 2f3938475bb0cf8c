"""Small statistics for the benchmarks: percentiles, medians of runs, ratios.

Pure functions over lists of numbers, so the report code can be tested on canned figures.
Percentiles use the nearest rank on the sorted sample (what bench/api_bench.py and
bench/watcher_bench.py use too), so figures from different benches compare.

Not here: timing anything, or formatting (bench/report.py).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def pct(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank; NaN for an empty sample."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return float(ordered[index])


def summary(values: Sequence[float], digits: int = 3) -> dict[str, float]:
    """p50, p99, mean, max and n of a sample (already in the unit wanted)."""
    if not values:
        return {"p50": math.nan, "p99": math.nan, "mean": math.nan, "max": math.nan, "n": 0}
    return {
        "p50": round(pct(values, 0.5), digits),
        "p99": round(pct(values, 0.99), digits),
        "mean": round(statistics.fmean(values), digits),
        "max": round(max(values), digits),
        "n": len(values),
    }


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def cost_ratio(measured: float, reference: float, higher_is_better: bool) -> float | None:
    """How many times the reference's cost the measured figure is.

    1.0 is "at the reference"; above 1 is slower (a latency that is longer, a rate that is
    lower), below 1 is better than the reference. None when either side is missing or 0.
    """
    if not _usable(measured) or not _usable(reference):
        return None
    ratio = reference / measured if higher_is_better else measured / reference
    return round(ratio, 2)


def _usable(value: float) -> bool:
    return value is not None and not math.isnan(value) and value > 0
