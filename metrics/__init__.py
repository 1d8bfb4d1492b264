"""Every Prometheus metric of cachetail is declared in this package.

``metrics.api`` holds the read API's, ``metrics.invalidator`` the worker's; each
process imports only its own, so each /metrics shows only what that process
does.  Conventions: base units (seconds, bytes), ``_total`` on counters, labels
from small closed sets (entity, result, route template, table) and never an id.
"""

from __future__ import annotations

# Lookup buckets split sub-millisecond hits from 50-100 ms misses; the client's
# defaults start at 5 ms, where every hit would land in the first bucket.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.0025, 0.005, 0.0075,
    0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
