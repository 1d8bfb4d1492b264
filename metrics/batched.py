"""Metric updates of the hot path, batched into plain numbers and flushed once per loop turn.

A near-cache hit updates five metrics: the request's counter and histogram, the lookup's
counter and histogram, the near-cache's counter.  prometheus_client's ``inc()`` and
``observe()`` take a lock each, ``observe()`` walks its buckets in Python, and in
multiprocess mode each one writes a file mapping: together about a third of what a hit
costs the API.  Here the hot path adds to plain numbers (a bucket found by ``bisect``), and
:meth:`Batch.flush` moves the sums into the prometheus_client children: once per turn of
the event loop (the first update of a turn schedules it) and before every collection.  So
what a scrape or /cache/stats reads is exact: a request's figures reach the shared
children in the same loop turn that answered it, before any later request is read.

The metrics stay declared where they are (:mod:`metrics.api`); a cell is a child's pending
part.  Histograms are flushed through the child's own bucket values (``_buckets``,
``_sum``): prometheus_client has no public "add n observations" call, and
``tests/test_metrics_batched.py`` tells when those attributes change.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from typing import Any

from prometheus_client.registry import Collector


class Batch:
    """The cells of one process, and whether a flush is scheduled."""

    def __init__(self) -> None:
        self.cells: list[Counted | Timed] = []
        self.pending = False

    def counter(self, child: Any) -> Counted:
        cell = Counted(self, child)
        self.cells.append(cell)
        return cell

    def histogram(self, child: Any) -> Timed:
        cell = Timed(self, child)
        self.cells.append(cell)
        return cell

    def schedule(self) -> None:
        """A cell changed: flush at the end of this loop turn (at once outside a loop)."""
        self.pending = True
        try:
            asyncio.get_running_loop().call_soon(self.flush)
        except RuntimeError:
            self.flush()

    def flush(self) -> None:
        self.pending = False
        for cell in self.cells:
            cell.flush()


class Counted:
    """A Counter child's increments not yet added to it."""

    __slots__ = ("batch", "child", "n")

    def __init__(self, batch: Batch, child: Any) -> None:
        self.batch = batch
        self.child = child
        self.n = 0

    def inc(self) -> None:
        self.n += 1
        if not self.batch.pending:
            self.batch.schedule()

    def flush(self) -> None:
        if self.n:
            n, self.n = self.n, 0
            self.child.inc(n)


class Timed:
    """A Histogram child's observations not yet added to it, by bucket."""

    __slots__ = ("batch", "child", "bounds", "counts", "total", "count")

    def __init__(self, batch: Batch, child: Any) -> None:
        self.batch = batch
        self.child = child
        self.bounds = list(child._upper_bounds)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bound >= value, as observe()
        self.total += value
        self.count += 1
        if not self.batch.pending:
            self.batch.schedule()

    def flush(self) -> None:
        if not self.count:
            return
        counts, self.counts = self.counts, [0] * len(self.bounds)
        total, self.total, self.count = self.total, 0.0, 0
        buckets = self.child._buckets
        for i, n in enumerate(counts):
            if n:
                buckets[i].inc(n)
        self.child._sum.inc(total)


class FlushFirst(Collector):
    """Registered before every metric: a collection of the registry sees no pending update."""

    def __init__(self, batch: Batch) -> None:
        self.batch = batch

    def collect(self) -> list[Any]:
        self.batch.flush()
        return []
