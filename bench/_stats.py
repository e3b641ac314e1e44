"""Summaries of measured samples: percentiles (linear between closest ranks), median and spread.

Everything is rounded for the report; None marks a figure that could not be measured.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The `fraction` (0..1) percentile, interpolated between the two closest ranks."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def rounded(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def summary(values: Sequence[float], points: Sequence[str] = ("p50", "p95", "p99")) -> dict[str, float | None]:
    """The named percentiles ("p50", "p99"...), and the max, of `values`."""
    out: dict[str, float | None] = {
        name: rounded(percentile(values, int(name[1:]) / 100)) for name in points
    }
    out["max"] = rounded(max(values)) if values else None
    return out


def spread(values: Sequence[float]) -> dict[str, float | None]:
    """Median, min, max, interquartile range and standard deviation (cold starts)."""
    if not values:
        return {"median": None, "min": None, "max": None, "iqr": None, "stdev": None}
    q1, q3 = percentile(values, 0.25), percentile(values, 0.75)
    assert q1 is not None and q3 is not None
    return {
        "median": rounded(statistics.median(values)),
        "min": rounded(min(values)),
        "max": rounded(max(values)),
        "iqr": rounded(q3 - q1),
        "stdev": rounded(statistics.stdev(values)) if len(values) > 1 else 0.0,
    }
