"""Prometheus /metrics scrapes: parse, subtract two, and read figures off the difference.

A phase's server-side figures are ``diff(before, after)``: counters and histogram
buckets become what happened during the phase; gauges keep their value after it.
Histogram quantiles are estimated from bucket deltas exactly as PromQL's
``histogram_quantile`` does (linear interpolation inside the bucket).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]
_CUMULATIVE = ("counter", "histogram", "summary")


def _labels(labels: Mapping[str, str]) -> Labels:
    return tuple(sorted(labels.items()))


@dataclass
class Scrape:
    """Samples keyed by (sample name, sorted labels), with each sample's family type."""

    samples: dict[tuple[str, Labels], float] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)

    # ---------------------------------------------------------------- reading

    def _match(self, name: str, where: Mapping[str, str]) -> Iterable[tuple[Labels, float]]:
        for (sample, labels), value in self.samples.items():
            if sample != name:
                continue
            d = dict(labels)
            if all(d.get(k) == v for k, v in where.items()):
                yield labels, value

    def value(self, name: str, **where: str) -> float:
        """Sum of the samples called ``name`` whose labels include ``where``; 0 if none."""
        return sum(v for _, v in self._match(name, where))

    def has(self, name: str) -> bool:
        return any(sample == name for sample, _ in self.samples)

    def by(self, name: str, label: str, **where: str) -> dict[str, float]:
        """``name`` summed per value of ``label`` (for example lookups per result)."""
        out: dict[str, float] = {}
        for labels, v in self._match(name, where):
            key = dict(labels).get(label, "")
            out[key] = out.get(key, 0.0) + v
        return out

    def buckets(self, histogram: str, **where: str) -> list[tuple[float, float]]:
        """Cumulative (upper bound, count) of a histogram, summed over label sets matching
        ``where`` (other labels, e.g. every route, are added together), sorted by bound."""
        summed: dict[float, float] = {}
        for labels, v in self._match(f"{histogram}_bucket", where):
            le = float(dict(labels)["le"])
            summed[le] = summed.get(le, 0.0) + v
        return sorted(summed.items())

    def quantile(self, histogram: str, q: float, **where: str) -> float | None:
        return histogram_quantile(q, self.buckets(histogram, **where))

    def mean(self, histogram: str, **where: str) -> float | None:
        count = self.value(f"{histogram}_count", **where)
        return self.value(f"{histogram}_sum", **where) / count if count else None


def parse(text: str) -> Scrape:
    """A Prometheus text exposition as a :class:`Scrape` (``*_created`` samples dropped)."""
    scrape = Scrape()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            scrape.types[sample.name] = family.type
            key = (sample.name, _labels(sample.labels))
            scrape.samples[key] = scrape.samples.get(key, 0.0) + float(sample.value)
    return scrape


def diff(before: Scrape, after: Scrape) -> Scrape:
    """What happened between two scrapes: counters, histogram and summary samples become
    increases (a counter that went down was reset: its new value is the increase, as in
    PromQL); gauges and unknown types keep their value from ``after``."""
    out = Scrape(types=dict(after.types))
    for key, value in after.samples.items():
        kind = after.types.get(key[0], "unknown")
        if kind in _CUMULATIVE:
            old = before.samples.get(key, 0.0)
            out.samples[key] = value - old if value >= old else value
        else:
            out.samples[key] = value
    return out


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """PromQL's estimate of the q-quantile from cumulative (le, count) buckets.

    None when there are no observations.  A rank that falls in the +Inf bucket
    yields the highest finite bound; the lowest bucket starts at 0 (if its bound is
    positive), so values are interpolated from 0 to its bound."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within [0, 1], got {q}")
    if not buckets or buckets[-1][1] <= 0:
        return None
    if not math.isinf(buckets[-1][0]):
        raise ValueError("a histogram's buckets must end with +Inf")
    rank = q * buckets[-1][1]
    finite = len(buckets) - 1
    b = next((i for i in range(finite) if buckets[i][1] >= rank), finite)
    if b == finite:  # in the +Inf bucket: the highest finite bound is all we know
        return buckets[b - 1][0] if b > 0 else None
    upper, count = buckets[b]
    if b == 0 and upper <= 0:
        return upper
    lower, below = (0.0, 0.0) if b == 0 else buckets[b - 1]
    in_bucket = count - below
    if in_bucket <= 0:
        return lower
    return lower + (upper - lower) * (rank - below) / in_bucket


def counts_from_buckets(buckets: list[tuple[float, float]]) -> list[tuple[float, float, float]]:
    """Per-bucket (lower, upper, count) from cumulative buckets, for histograms in charts."""
    out = []
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        out.append((prev_le, le, count - prev_count))
        prev_le, prev_count = le, count
    return out
