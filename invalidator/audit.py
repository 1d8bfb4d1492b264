"""The consistency auditor: does the cache hold what MySQL holds? (Meta's Polaris, in small.)

It runs in the invalidator leader, on a thread and connections of its own, and makes two
kinds of check of a cached key against the bytes a cold fill would store now
(:mod:`invalidator.truth`):

- ``invalidation``: a share (``AUDIT_INVALIDATION_SHARE``) of the transactions the worker
  applies has one of its keys checked again ``AUDIT_DELAY_S`` later;
- ``sample``: keys under the prefix, swept by SCAN at ``AUDIT_SAMPLE_KEYS_PER_S``.

A mismatch is confirmed before it counts, so a change in flight is never reported: the
server's binlog position is read after the SELECT, the auditor waits until the worker has
applied past it (every change the SELECT saw is then invalidated), and reads both sides
again.  Only the same cached bytes, against the same database bytes, still differing, is an
inconsistency: the key is deleted (always safe, even from a deposed leader), logged once
and counted.  Anything that moved in between was in flight and is checked no further.

Its load is bounded: at most ``AUDIT_DB_QUERIES_PER_S`` statements, and never more than a
tenth of its time in MySQL (after a query of d seconds it waits at least 9 d), so a slow
server slows the audit, not the server.  The apply path only hands over key names.
"""

from __future__ import annotations

import heapq
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pymysql
import redis

from cachetail.keyspace import Keyspace
from cachetail.schema import Catalog
from metrics import invalidator as m

from invalidator.daemon import Daemon
from invalidator.lag import reached
from invalidator.position import Position
from invalidator.source import close_quietly, current_position
from invalidator.truth import ABSENT, Target, Truth

log = logging.getLogger("invalidator")
MAX_QUEUED = 10_000
SHOWN = 200  # bytes of each value in a log line


class Auditor(Daemon):
    def __init__(self, *, catalog: Callable[[], Catalog], keyspace: Keyspace, client: redis.Redis | redis.RedisCluster,
                 connect: Callable[[], pymysql.connections.Connection], applied: Callable[[], Position | None],
                 delay_s: float, sample_keys_per_s: float, db_queries_per_s: float, invalidation_share: float,
                 confirm_timeout_s: float = 10.0) -> None:
        super().__init__("auditor")
        self.catalog, self.keyspace, self.client = catalog, keyspace, client
        self.connect, self.applied = connect, applied
        self.delay_s, self.share, self.confirm_timeout_s = delay_s, invalidation_share, confirm_timeout_s
        self.sample_every_s = 1.0 / sample_keys_per_s if sample_keys_per_s > 0 else None
        self.query_every_s = 1.0 / db_queries_per_s
        self.due: list[tuple[float, int, str, float]] = []  # (check at, seq, key, change time)
        self.seq = 0
        self.lock = threading.Lock()
        self.conn: pymysql.connections.Connection | None = None
        self.next_query_at = 0.0
        self.next_sample_at = 0.0
        self.sweep: Iterator[bytes] | None = None
        self.truth: Truth | None = None
        self._truth_of: Catalog | None = None

    def close(self) -> None:
        super().close()
        self.thread.join(5)
        self._drop_connection()

    # ------------------------------------------------------------- the apply path

    def changed(self, keys: list[str], change_ts: float) -> None:
        """A transaction (or group) was applied: maybe check one of its keys later.  Cheap."""
        if not keys or random.random() >= self.share:
            return
        with self.lock:
            if len(self.due) >= MAX_QUEUED:
                return
            self.seq += 1
            heapq.heappush(self.due, (time.monotonic() + self.delay_s, self.seq, random.choice(keys), change_ts))

    # --------------------------------------------------------------------- loop

    def run(self) -> None:
        while not self.stopped.is_set():
            item = self._take_due()
            try:
                if item is not None:
                    self.check(item[2], "invalidation", item[3])
                elif self.sample_every_s is not None and time.monotonic() >= self.next_sample_at:
                    self.next_sample_at = time.monotonic() + self.sample_every_s
                    key = self._next_sample()
                    if key is not None:
                        self.check(key, "sample")
                else:
                    self.stopped.wait(self._idle_s())
            except (redis.RedisError, OSError, pymysql.err.MySQLError) as exc:
                m.AUDIT_SKIPPED.labels("unavailable").inc()
                log.debug("audit check skipped: %s", exc)
                self._drop_connection()
                self.stopped.wait(1.0)

    def _take_due(self) -> tuple[float, int, str, float] | None:
        with self.lock:
            if self.due and self.due[0][0] <= time.monotonic():
                return heapq.heappop(self.due)
        return None

    def _idle_s(self) -> float:
        with self.lock:
            first = self.due[0][0] if self.due else None
        until = [0.1]
        if first is not None:
            until.append(first - time.monotonic())
        if self.sample_every_s is not None:
            until.append(self.next_sample_at - time.monotonic())
        return max(0.001, min(until))

    def _next_sample(self) -> str | None:
        """The next key of a SCAN sweep over the prefix (every primary); a new sweep when done."""
        for _ in range(2):
            if self.sweep is None:
                self.sweep = iter(self.client.scan_iter(match=self.keyspace.owned_pattern(), count=100))
            for key in self.sweep:
                parts = self.keyspace.parse(key)
                if parts.kind in ("row", "page"):
                    return key.decode() if isinstance(key, bytes) else str(key)
            self.sweep = None
        return None

    # -------------------------------------------------------------------- checks

    def check(self, key: str, kind: str, change_ts: float | None = None) -> None:
        truth = self._truth()
        if self.keyspace.parse(key).kind == "generation":
            page = truth.page_of(key)
            if page is None:
                return
            key = page
        raw = self._get(key)
        target = truth.target(key, raw, self._weigh)
        if target is None:
            m.AUDIT_SKIPPED.labels("unnamed").inc()
            return
        cached = self._cached(truth, target, raw)
        if cached is ABSENT:
            m.AUDIT_CHECKS.labels(kind, "consistent").inc()
            return
        now = self._now(truth, target)
        if cached == now:
            m.AUDIT_CHECKS.labels(kind, "consistent").inc()
            return
        if self.confirm(truth, target, cached, now):
            self.repair(target, kind, cached, now, change_ts)
        else:
            m.AUDIT_CHECKS.labels(kind, "consistent").inc()

    def confirm(self, truth: Truth, target: Target, cached: object, now: bytes | None) -> bool:
        """After the worker applied past the server's position, the same cached bytes against
        the same database bytes: an inconsistency, not a change in flight."""
        self._pace()
        assert self.conn is not None
        server = current_position(self.conn)
        deadline = time.monotonic() + self.confirm_timeout_s
        while not self._applied_past(server):
            if time.monotonic() > deadline or self.stopped.wait(0.01):
                m.AUDIT_SKIPPED.labels("behind").inc()
                return False
        again = self._cached(truth, target, self._get(target.key))
        return again == cached and self._now(truth, target) == now

    def repair(self, target: Target, kind: str, cached: object, now: bytes | None, change_ts: float | None) -> None:
        self.client.delete(target.key)  # safe from anyone: the next read fills from MySQL
        m.AUDIT_CHECKS.labels(kind, "inconsistent").inc()
        m.AUDIT_REPAIRS.inc()
        if change_ts is not None:
            m.AUDIT_DETECTION_SECONDS.observe(max(0.0, time.time() - change_ts))
        log.error("INCONSISTENT (%s check) %s %s: cached %s, MySQL %s (applied up to %s); the key was deleted",
                  kind, target.name, target.key, _shown(cached), _shown(now), self.applied())

    # ------------------------------------------------------------------ helpers

    def _truth(self) -> Truth:
        catalog = self.catalog()
        if self.truth is None or self._truth_of is not catalog:
            self.truth, self._truth_of = Truth(catalog, self.keyspace), catalog
        return self.truth

    def _cached(self, truth: Truth, target: Target, raw: bytes | None) -> object:
        generation = self._get(target.generation) if target.generation else None
        return truth.cached(target, raw, generation)

    def _get(self, key: str) -> bytes | None:
        value = self.client.get(key)
        return value if isinstance(value, bytes) or value is None else str(value).encode()

    def _now(self, truth: Truth, target: Target) -> bytes | None:
        self._pace()
        assert self.conn is not None
        started = time.monotonic()
        try:
            return truth.now(self.conn, target)
        finally:
            # a slow server slows the audit: at most a tenth of the time in MySQL
            self.next_query_at = max(self.next_query_at, time.monotonic() + 9 * (time.monotonic() - started))

    def _weigh(self, sql: str, args: tuple[str, ...]) -> tuple[str, ...]:
        self._pace()
        assert self.conn is not None
        with self.conn.cursor() as cur:
            cur.execute(sql, args)
            row: Any = cur.fetchone()
        return tuple(str(v) for v in row)

    def _pace(self) -> None:
        """Wait for the next query's turn (AUDIT_DB_QUERIES_PER_S, and the slow-server rule)."""
        wait = self.next_query_at - time.monotonic()
        if wait > 0:
            self.stopped.wait(wait)
        self.next_query_at = max(self.next_query_at, time.monotonic()) + self.query_every_s
        if self.conn is None:
            self.conn = self.connect()

    def _applied_past(self, server: Position) -> bool:
        applied = self.applied()
        return applied is not None and reached(applied, server)

    def _drop_connection(self) -> None:
        close_quietly(self.conn)
        self.conn = None


def _shown(value: object) -> str:
    if value is None:
        return "no row"
    if isinstance(value, bytes):
        text = value[:SHOWN].decode(errors="replace")
        return repr(text + ("..." if len(value) > SHOWN else ""))
    return "nothing"
