"""A batch and the position after it -> one fenced Redis script, retried until acknowledged.

:class:`Applier` sends a batch (see :mod:`invalidator.apply` for its ops) in one fenced
script together with the position after the transaction, and retries with backoff until
Redis acknowledges it or the worker is told to stop.  It never gives up and never moves
the position past unacknowledged work.  While the worker is behind, :class:`invalidator.sending.Writer`
keeps two scripts in flight on one connection, and falls back on :meth:`Applier.apply`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis
from redis.connection import Connection

from cachetail.backoff import Backoff
from cachetail.keyspace import SLOTS, Keyspace, key_slot
from cachetail.scripts import FENCED_APPLY, MARK, SLOT_APPLY
from invalidator.apply import OP_BUMP, OP_DELETE, Batch, PackedOps, pack_ops
from invalidator.leader import Leadership, LostLeadership
from invalidator.position import Position, PositionStore
from metrics import invalidator as m

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
                 leadership: Leadership, on_wait: Callable[[], None] = lambda: None,
                 watermark_slots_max: int = 64) -> None:
        self.client = client
        self.keyspace = keyspace
        self.store = store
        self.stop = stop
        self.retry_max_s = retry_max_s
        self.leadership = leadership
        self.on_wait = on_wait
        self.redis_ok = True
        self.cluster = isinstance(client, redis.RedisCluster)
        self.pool = None if isinstance(client, redis.RedisCluster) else client.connection_pool
        self.fenced = client.register_script(FENCED_APPLY)
        self._slot_apply = client.register_script(SLOT_APPLY)
        self._mark = client.register_script(MARK)
        self._state_keys = [keyspace.invalidator_leader(), keyspace.invalidator_position(),
                            keyspace.invalidator_applied()]
        # one node: a batch of at most this many keys marks their slots' watermarks, a larger
        # one (or any, at 0) the node's; a cluster always marks slot by slot
        self.watermark_slots_max = watermark_slots_max
        self._publish = b"SPUBLISH" if self.cluster else b"PUBLISH"
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
                    delays = Backoff(0.05, self.retry_max_s)
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
        saved = self.saved_json(position)
        packed = None if self.cluster else pack_ops(keys, ops)  # a cluster packs slot by slot

        state = state_of(position)

        def send() -> None:
            self.before_send(batch)
            if batch.clear:  # the watermarks first: a fill that leases a cleared key sees them
                self.mark_all(state)
            for pattern in sorted(batch.clear):
                self._unlink_matching(pattern)
            if self.cluster:
                if keys:
                    self._send_slots(keys, ops, state)
                if saved or state:
                    self._send_fenced(pack_ops([], []), saved, state)
            elif keys or saved or state:
                assert packed is not None
                self._send_fenced(packed, saved, state, self.marks(keys))

        self.retry("applying a transaction", send)
        if position is not None:
            self.store.committed(position)
        deleted, bumped = (packed.deleted, packed.bumped) if packed else (ops.count(OP_DELETE), ops.count(OP_BUMP))
        count_keys(deleted, bumped, len(ops) - deleted - bumped)

    def saved_json(self, position: Position | None) -> bytes:
        """The position as the fenced script saves it ('' where it is kept elsewhere)."""
        return position.to_json() if position is not None and self.store.in_redis else b""

    def fenced_off(self, done: Any) -> None:
        if not done:
            self.leadership.lost.set()
            raise LostLeadership("the lease moved on: the write was fenced off")

    def release(self, conn: Connection, broken: bool = False) -> None:
        if broken:
            conn.disconnect()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped; a reply may be unread on it
        if self.pool is not None:
            self.pool.release(conn)

    def _send_fenced(self, packed: PackedOps, saved: bytes, state: bytes, marks: Sequence[str] = ()) -> None:
        value = self.leadership.value
        if value is None:
            raise LostLeadership("not the leader")
        script_keys, args = self.fenced_call(value, packed, saved, state, marks)
        self.fenced_off(self.fenced(keys=script_keys, args=args))

    def fenced_call(self, value: str, packed: PackedOps, saved: bytes, state: bytes,
                     marks: Sequence[str]) -> tuple[list[str], list[Any]]:
        """FENCED_APPLY's keys and arguments (see cachetail/keyspace.py)."""
        return ([*self._state_keys, *marks, *packed.keys],
                [value, saved, packed.layout, state, len(marks), self._publish, *packed.values])

    def marks(self, keys: list[str]) -> list[str]:
        """One node: the watermarks a batch of ``keys`` sets; none for a position alone."""
        if not keys:
            return []
        if len(keys) > self.watermark_slots_max:
            return [self.keyspace.node_watermark()]
        return sorted({self.keyspace.slot_watermark(key_slot(key)) for key in keys})

    def mark_all(self, state: bytes, only_missing: bool = False) -> None:
        """Every watermark a fill may read: the node's on one Redis node, every slot's on a
        cluster (one script per slot, pipelined).  ``only_missing``: a leader starting, which
        gives a watermark to each slot that has none."""
        nx = b"NX" if only_missing else b""
        if not self.cluster:
            self._mark(keys=[self.keyspace.node_watermark()], args=[state, nx])
            return
        pipe = self.client.pipeline(transaction=False)
        for slot in range(SLOTS):
            pipe.execute_command("EVAL", MARK, 1, self.keyspace.slot_watermark(slot), state, nx)
        pipe.execute()

    def _send_slots(self, keys: list[str], ops: list[bytes], state: bytes) -> None:
        if self.leadership.value is None:
            raise LostLeadership("not the leader")
        token = self.leadership.token
        by_slot: dict[int, tuple[list[str], list[bytes]]] = {}
        for key, op in zip(keys, ops, strict=True):
            group = by_slot.setdefault(key_slot(key), ([], []))
            group[0].append(key)
            group[1].append(op)
        slots = [(slot, pack_ops(*group)) for slot, group in by_slot.items()]
        ks = self.keyspace
        if len(slots) == 1:
            ((slot, packed),) = slots
            results = [self._slot_apply(keys=[ks.slot_fence(slot), ks.slot_watermark(slot), *packed.keys],
                                        args=[token, packed.layout, state, *packed.values])]
        else:
            # EVAL, not EVALSHA: a promoted replica may not have the script cached yet
            pipe = self.client.pipeline(transaction=False)
            for slot, packed in slots:
                pipe.execute_command("EVAL", SLOT_APPLY, 2 + len(packed.keys), ks.slot_fence(slot),
                                     ks.slot_watermark(slot), *packed.keys, token, packed.layout, state,
                                     *packed.values)
            results = pipe.execute()
        if not all(results):
            self.leadership.lost.set()
            raise LostLeadership("a newer leader has written these slots: the write was fenced off")

    def save(self, position: Position) -> None:
        """Save a position alone (transactions that touched nothing cached, rotations)."""
        self.apply(Batch(False), position)

    def load(self) -> Position | None:
        return self.retry("loading the saved position", self.store.load)

    def clear_owned(self, position: Position) -> int:
        """UNLINK every cached key under the prefix (SCAN in batches; never FLUSHALL), after
        marking every watermark with ``position``'s GTID state.  The invalidator's own state
        (lease, fences, position, watermarks) stays."""
        self.retry("marking every watermark", lambda: self.mark_all(state_of(position)))
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


def state_of(position: Position | None) -> bytes:
    """The GTID state after the work, as the scripts take it ('' when unknown)."""
    return position.gtid.encode() if position is not None and position.gtid else b""


def count_keys(deleted: int, bumped: int, stored: int) -> None:
    for action, count in (("deleted", deleted), ("generation_bumped", bumped), ("refreshed", stored)):
        if count:
            m.KEYS.labels(action).inc(count)

