"""What a cached read answers, and the lookups metric that counts it."""

from __future__ import annotations

import time
from typing import NamedTuple

from metrics.api import CACHE_LOOKUP_SECONDS, CACHE_LOOKUPS, HOT
from metrics.batched import Counted, Timed

HIT, MISS, BYPASS, PRIMARY = "HIT", "MISS", "BYPASS", "PRIMARY"
NEAR, REDIS = "near", "redis"  # where a hit came from (the X-Cache-Tier header)
FOUND, LEASED, ABSENT = "found", "leased", "absent"  # what a read found in the key


class Answer(NamedTuple):  # a tuple: the cheapest record to build on a near-cache hit
    body: bytes | None  # None: no such row
    source: str  # HIT, MISS, BYPASS or PRIMARY (the X-Cache header)
    tier: str | None = None  # NEAR or REDIS for a hit


def count(entity: str, answer: Answer, started: float) -> None:
    cells = _LOOKUP_CELLS.get((entity, answer.source)) or _lookup_cells(entity, answer.source)
    cells[0].inc()
    cells[1].observe(time.perf_counter() - started)


# Resolved once per (entity, result): labels() costs a lock and a key per call; the updates
# are batched (metrics/batched.py).
_LOOKUP_CELLS: dict[tuple[str, str], tuple[Counted, Timed]] = {}


def _lookup_cells(entity: str, source: str) -> tuple[Counted, Timed]:
    result = source.lower()
    cells = _LOOKUP_CELLS[(entity, source)] = (HOT.counter(CACHE_LOOKUPS.labels(entity, result)),
                                                HOT.histogram(CACHE_LOOKUP_SECONDS.labels(entity, result)))
    return cells
