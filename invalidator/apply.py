"""One transaction's changes -> the keys it made stale -> one fenced Redis script.

:class:`Batch` collects, deduplicated, what a transaction did to the tables
cachetail caches (see :mod:`invalidator.rules`): for each key the last action
(delete, write the new row's bytes in refresh mode, bump a list variant's
generation), and the patterns a DDL statement clears.  :class:`Applier` sends
a batch in one fenced script together with the position after the transaction, and
retries with backoff until Redis acknowledges it or the worker is told to stop.
It never gives up and never moves the position past unacknowledged work.
:class:`Group` lets several transactions share one pipeline while the worker
is behind.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from cachetail.keyspace import (FENCED_APPLY, OP_BUMP, OP_DELETE, OP_SET, SLOT_APPLY, Keyspace, PackedOps, key_slot,
                                pack_ops)
from metrics import invalidator as m

from invalidator.leader import Leadership, LostLeadership
from invalidator.position import Position, PositionStore

log = logging.getLogger("invalidator")
T = TypeVar("T")
REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError,
                redis.exceptions.ReadOnlyError, redis.exceptions.TryAgainError,
                # a cluster in failover: slots uncovered or moving for a moment
                redis.exceptions.ClusterDownError, redis.exceptions.RedisClusterException,
                redis.exceptions.ClusterError, OSError)
SCAN_BATCH = 500


class Stopped(Exception):
    """The worker was asked to stop while waiting for Redis."""


def backoff_delays(first: float, cap: float) -> Any:
    """Exponential backoff with full jitter: 0..first, 0..2*first, ... capped."""
    delay = first
    while True:
        yield random.uniform(delay / 2, delay)
        delay = min(cap, delay * 2)


class Batch:
    """The deduplicated effect of one transaction (or a group of them) on the cache: for each
    key its last operation, and the SCAN patterns a DDL statement clears."""

    __slots__ = ("clear", "ops", "refresh", "row_events")

    def __init__(self, refresh: bool) -> None:
        self.refresh = refresh
        self.ops: dict[str, bytes] = {}  # key -> OP_DELETE, OP_BUMP or OP_SET + "<ttl> " + value
        self.clear: set[str] = set()
        self.row_events = 0

    def __bool__(self) -> bool:
        return bool(self.ops) or bool(self.clear)

    def delete(self, key: str) -> None:
        self.ops[key] = OP_DELETE

    def write(self, key: str, value: bytes, ttl_s: int) -> None:
        self.ops[key] = OP_SET + b"%d " % ttl_s + value

    def bump(self, key: str) -> None:
        self.ops[key] = OP_BUMP


class Applier:
    """Sends batches to Redis, fenced by the leader's token, retrying until acknowledged.

    One Redis node: a transaction's keys and its position go in one FENCED_APPLY
    script, atomic.  Redis Cluster: the keys go slot by slot (SLOT_APPLY, one
    script per slot, all slots in one pipeline), and only once every slot has
    acknowledged, the position is saved by FENCED_APPLY in the ``{inv}`` slot:
    never ahead of the work, at worst behind it (at-least-once).
    """

    def __init__(self, client: redis.Redis | redis.RedisCluster, keyspace: Keyspace,
                 store: PositionStore, stop: threading.Event, retry_max_s: float,
                 leadership: Leadership, on_wait: Callable[[], None] = lambda: None) -> None:
        self.client = client
        self.keyspace = keyspace
        self.store = store
        self.stop = stop
        self.retry_max_s = retry_max_s
        self.leadership = leadership
        self.on_wait = on_wait
        self.redis_ok = True
        self.cluster = isinstance(client, redis.RedisCluster)
        self._fenced = client.register_script(FENCED_APPLY)
        self._slot_apply = client.register_script(SLOT_APPLY)
        self._state_keys = [keyspace.invalidator_leader(), keyspace.invalidator_position()]
        # test seam: called with each batch right before it is written (a pause goes here)
        self.before_send: Callable[[Batch], None] = lambda batch: None

    # -------------------------------------------------------------- retrying

    def retry(self, what: str, action: Callable[[], T]) -> T:
        """Run ``action`` until Redis answers; raise :class:`Stopped` on a stop request."""
        delays = None
        while True:
            try:
                result = action()
            except REDIS_ERRORS as exc:
                if delays is None:
                    delays = backoff_delays(0.05, self.retry_max_s)
                    m.RECONNECTS.labels("redis").inc()
                    log.error("redis unavailable while %s (%s); retrying, position held", what, exc)
                self.redis_ok = False
                self.on_wait()
                if self.stop.wait(next(delays)):
                    raise Stopped from exc
                if self.leadership.lost.is_set():  # a standby that reaches Redis may lead now
                    raise LostLeadership("Redis unreachable for longer than the lease") from exc
                continue
            if not self.redis_ok:
                log.warning("redis is back; %s done", what)
            self.redis_ok = True
            return result

    # ---------------------------------------------------------------- work

    def apply(self, batch: Batch, position: Position | None) -> None:
        """Send the batch and the position, fenced; retry until acknowledged.

        Raises :class:`LostLeadership` when the fence refuses the write."""
        keys, ops = list(batch.ops), list(batch.ops.values())
        saved = position.to_json() if position is not None and self.store.in_redis else b""
        packed = None if self.cluster else pack_ops(keys, ops)  # a cluster packs slot by slot

        def send() -> None:
            self.before_send(batch)
            for pattern in sorted(batch.clear):
                self._unlink_matching(pattern)
            if self.cluster:
                if keys:
                    self._send_slots(keys, ops)
                if saved:
                    self._send_fenced(pack_ops([], []), saved)
            elif keys or saved:
                assert packed is not None
                self._send_fenced(packed, saved)

        self.retry("applying a transaction", send)
        if position is not None:
            self.store.committed(position)
        deleted, bumped = (packed.deleted, packed.bumped) if packed else (ops.count(OP_DELETE), ops.count(OP_BUMP))
        for action, count in (("deleted", deleted), ("generation_bumped", bumped),
                              ("refreshed", len(ops) - deleted - bumped)):
            if count:
                m.KEYS.labels(action).inc(count)

    def _send_fenced(self, packed: PackedOps, saved: bytes) -> None:
        value = self.leadership.value
        if value is None:
            raise LostLeadership("not the leader")
        done = self._fenced(keys=[*self._state_keys, *packed.keys],
                            args=[value, saved, packed.layout, *packed.values])
        if not done:
            self.leadership.lost.set()
            raise LostLeadership("the lease moved on: the write was fenced off")

    def _send_slots(self, keys: list[str], ops: list[bytes]) -> None:
        if self.leadership.value is None:
            raise LostLeadership("not the leader")
        token = self.leadership.token
        by_slot: dict[int, tuple[list[str], list[bytes]]] = {}
        for key, op in zip(keys, ops):
            group = by_slot.setdefault(key_slot(key), ([], []))
            group[0].append(key)
            group[1].append(op)
        slots = [(slot, pack_ops(*group)) for slot, group in by_slot.items()]
        if len(slots) == 1:
            ((slot, packed),) = slots
            results = [self._slot_apply(keys=[self.keyspace.slot_fence(slot), *packed.keys],
                                        args=[token, packed.layout, *packed.values])]
        else:
            # EVAL, not EVALSHA: a promoted replica may not have the script cached yet
            pipe = self.client.pipeline(transaction=False)
            for slot, packed in slots:
                pipe.execute_command("EVAL", SLOT_APPLY, 1 + len(packed.keys), self.keyspace.slot_fence(slot),
                                     *packed.keys, token, packed.layout, *packed.values)
            results = pipe.execute()
        if not all(results):
            self.leadership.lost.set()
            raise LostLeadership("a newer leader has written these slots: the write was fenced off")

    def save(self, position: Position) -> None:
        """Save a position alone (transactions that touched nothing cached, rotations)."""
        self.apply(Batch(False), position)

    def load(self) -> Position | None:
        return self.retry("loading the saved position", self.store.load)

    def clear_owned(self) -> int:
        """UNLINK every cached key under the prefix (SCAN in batches; never FLUSHALL).
        The invalidator's own state (lease, fences, position) stays."""
        return self.retry("clearing every owned key",
                          lambda: self._unlink_matching(self.keyspace.owned_pattern()))

    def _unlink_matching(self, pattern: str) -> int:
        removed = 0
        batch: list[bytes] = []
        for key in self.client.scan_iter(match=pattern, count=SCAN_BATCH):  # every primary
            if self.keyspace.is_state(key):
                continue
            batch.append(key)
            if len(batch) >= SCAN_BATCH:
                removed += self.client.unlink(*batch)  # split by slot on a cluster
                batch.clear()
        if batch:
            removed += self.client.unlink(*batch)
        m.KEYS.labels("cleared").inc(removed)
        return removed


class Group:
    """Transactions applied together while the worker is behind (see Worker.commit).

    A finished transaction is held back only while more binlog data is already here
    (:meth:`invalidator.stream.Stream.pending`: buffered, or on the socket)
    and for at most MAX_AGE_S; caught up, each is applied at once.
    Catching up on 200,000 single-row commits this cut the Redis round trips ~100-fold.
    """

    MAX_TRANSACTIONS = 500
    MAX_KEYS = 5000
    MAX_AGE_S = 0.003  # added latency is bounded by this (measured: p99 budget 10 ms)

    def __init__(self, stream: Any) -> None:
        self.stream = stream  # its connection exists only once iterating has begun
        self.position: Position | None = None
        self.count = 0
        self.first: tuple[float, float, float] = (0.0, 0.0, 0.0)  # binlog ts, received, monotonic

    def defer(self, batch: Batch, position: Position, event_ts: float, received: float) -> bool:
        """Record this transaction in the group; True to wait for more before applying."""
        if self.position is None:
            self.first = (event_ts, received, time.monotonic())
        self.position = position
        self.count += 1
        if (self.count >= self.MAX_TRANSACTIONS or len(batch.ops) >= self.MAX_KEYS
                or time.monotonic() - self.first[2] >= self.MAX_AGE_S):
            return False
        return self.behind()

    def behind(self) -> bool:
        """More binlog is already here (the worker is catching up)."""
        pending = getattr(self.stream, "pending", None)
        return bool(pending()) if pending is not None else False

    def take(self) -> tuple[Position, int, float, float]:
        assert self.position is not None
        taken = (self.position, self.count, self.first[0], self.first[1])
        self.position, self.count = None, 0
        return taken
