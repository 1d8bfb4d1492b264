"""Percentiles and latency summaries of client-side samples (seconds in, seconds out)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

SUMMARY_QUANTILES: tuple[tuple[str, float], ...] = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99))


def percentile(values: Sequence[float], q: float, *, is_sorted: bool = False) -> float:
    """The q-quantile (0 <= q <= 1) by linear interpolation between closest ranks
    (numpy's default, "linear"); NaN for no values."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within [0, 1], got {q}")
    if not values:
        return math.nan
    data = values if is_sorted else sorted(values)
    pos = q * (len(data) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    frac = pos - lo
    return data[lo] + (data[hi] - data[lo]) * frac


def summarize(latencies: Sequence[float], elapsed_s: float | None = None) -> dict[str, Any]:
    """count, mean, p50/p90/p99, min/max (seconds) and, given the elapsed time, throughput."""
    data = sorted(latencies)
    out: dict[str, Any] = {"count": len(data)}
    if data:
        out["mean_s"] = sum(data) / len(data)
        for name, q in SUMMARY_QUANTILES:
            out[f"{name}_s"] = percentile(data, q, is_sorted=True)
        out["min_s"], out["max_s"] = data[0], data[-1]
    else:
        out.update({"mean_s": None, "p50_s": None, "p90_s": None, "p99_s": None,
                    "min_s": None, "max_s": None})
    if elapsed_s is not None:
        out["elapsed_s"] = elapsed_s
        out["throughput_rps"] = len(data) / elapsed_s if elapsed_s > 0 else None
    return out


def cdf_points(latencies: Sequence[float], points: int = 200) -> tuple[list[float], list[float]]:
    """(x, y) of the empirical CDF, thinned to about ``points`` points, for charts."""
    data = sorted(latencies)
    n = len(data)
    if n == 0:
        return [], []
    step = max(1, n // points)
    idx = list(range(0, n, step))
    if idx[-1] != n - 1:
        idx.append(n - 1)
    return [data[i] for i in idx], [(i + 1) / n for i in idx]


def windows(starts: Sequence[float], values: Sequence[float], width_s: float,
            t0: float = 0.0) -> list[tuple[float, list[float]]]:
    """Group ``values`` by the window of ``width_s`` their start time falls in; returns
    (window start relative to t0, values) for every window from the first to the last."""
    if width_s <= 0:
        raise ValueError("width_s must be positive")
    if not starts:
        return []
    buckets: dict[int, list[float]] = {}
    for t, v in zip(starts, values, strict=True):
        buckets.setdefault(int((t - t0) // width_s), []).append(v)
    first, last = min(buckets), max(buckets)
    return [(i * width_s, buckets.get(i, [])) for i in range(first, last + 1)]


def first_time_at_least(series: Sequence[tuple[float, float]], threshold: float,
                        sustain: int = 1) -> float | None:
    """The first x of (x, y) points from which y >= threshold holds for ``sustain``
    consecutive points; None if never."""
    run = 0
    for i, (_, y) in enumerate(series):
        run = run + 1 if y is not None and y >= threshold else 0
        if run >= sustain:
            return series[i - sustain + 1][0]
    return None


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return None
    return a / b
