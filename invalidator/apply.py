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
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from redis.connection import Connection

from cachetail.backoff import Backoff
from cachetail.keyspace import OP_BUMP, OP_DELETE, OP_SET, SLOTS, Keyspace, PackedOps, key_slot, pack_ops
from cachetail.scripts import FENCED_APPLY, MARK, SLOT_APPLY
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

    def merged(self, later: Batch) -> Batch:
        """This batch followed by ``later``, as one: for a key in both, ``later``'s op."""
        both = Batch(later.refresh)
        both.ops = {**self.ops, **later.ops}
        both.clear = self.clear | later.clear
        both.row_events = self.row_events + later.row_events
        return both


@dataclass(frozen=True)
class Sent:
    """A batch whose script is written to Redis and whose reply is not read yet: Redis runs
    it while the sender packs the next one (see :meth:`Applier.send_behind`)."""

    batch: Batch
    position: Position | None
    packed: PackedOps
    conn: Connection

    def replied(self) -> bool:
        """The reply can be read without waiting (or the connection is gone: reading says so)."""
        if not self.conn.is_connected:  # can_read would connect again
            return True
        try:
            return bool(self.conn.can_read(timeout=0))
        except REDIS_ERRORS:
            return True


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
        self._fenced = client.register_script(FENCED_APPLY)
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
        saved = self._saved(position)
        packed = None if self.cluster else pack_ops(keys, ops)  # a cluster packs slot by slot

        state = _state(position)

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
                self._send_fenced(packed, saved, state, self._marks(keys))

        self.retry("applying a transaction", send)
        if position is not None:
            self.store.committed(position)
        deleted, bumped = (packed.deleted, packed.bumped) if packed else (ops.count(OP_DELETE), ops.count(OP_BUMP))
        count_keys(deleted, bumped, len(ops) - deleted - bumped)

    # ------------------------------------------------- two scripts in flight

    def send_behind(self, batch: Batch, position: Position | None, earlier: Sent | None) -> Sent | None:
        """Write ``batch``'s script on the connection ``earlier``'s is on, then read ``earlier``'s
        reply: Redis, which runs a connection's commands in order, runs one script while the
        next is packed and written.  Returns ``batch`` as written and unacknowledged (its reply
        is read by the next call, or :meth:`receive`), or None once it is acknowledged too.

        After a fault both are applied again in one script, with ``batch``'s position, by
        :meth:`apply`'s retries: never ``earlier``'s ops after ``batch``'s, so a key both
        touch ends as ``batch`` left it, whichever of the two Redis had run.  Batches with
        DDL clears, and every batch on a cluster, take :meth:`apply` after ``earlier``."""
        if self.pool is None or batch.clear:
            self.receive(earlier)
            self.apply(batch, position)
            return None
        keys = list(batch.ops)
        packed = pack_ops(keys, list(batch.ops.values()))
        saved = self._saved(position)
        if earlier is not None:
            conn = earlier.conn
        else:
            try:
                conn = self.pool.get_connection()
            except REDIS_ERRORS:
                self.apply(batch, position)
                return None
        try:
            value = self.leadership.value
            if value is None:
                raise LostLeadership("not the leader")
            self.before_send(batch)
            if not conn.is_connected:  # it would reconnect by itself, and the reply be lost
                raise redis.ConnectionError("the connection of the script in flight is closed")
            script_keys, args = self._fenced_call(value, packed, saved, _state(position), self._marks(keys))
            # no health check: its PING's reply would be read before the one in flight
            conn.send_command("EVALSHA", self._fenced.sha, len(script_keys), *script_keys, *args,
                              check_health=False)
            if earlier is not None:
                self._acknowledged(earlier, conn.read_response())
        except (*REDIS_ERRORS, redis.ResponseError):  # a cut connection; NOSCRIPT after a restart
            self._release(conn, broken=True)
            self.apply(batch if earlier is None else earlier.batch.merged(batch), position)
            return None
        except BaseException:
            self._release(conn, broken=True)
            raise
        return Sent(batch, position, packed, conn)

    def receive(self, sent: Sent | None) -> None:
        """Read a written script's reply (see :meth:`send_behind`); after a fault, apply it again."""
        if sent is None:
            return
        try:
            if not sent.conn.is_connected:
                raise redis.ConnectionError("the connection of the script in flight is closed")
            self._acknowledged(sent, sent.conn.read_response())
        except (*REDIS_ERRORS, redis.ResponseError):
            self._release(sent.conn, broken=True)
            self.apply(sent.batch, sent.position)
            return
        except BaseException:
            self._release(sent.conn, broken=True)
            raise
        self._release(sent.conn)

    def drop(self, sent: Sent) -> None:
        """Leading ended: the reply is not wanted (the next leader resumes from the saved position)."""
        self._release(sent.conn, broken=True)

    def _saved(self, position: Position | None) -> bytes:
        """The position as the fenced script saves it ('' where it is kept elsewhere)."""
        return position.to_json() if position is not None and self.store.in_redis else b""

    def _fenced_off(self, done: Any) -> None:
        if not done:
            self.leadership.lost.set()
            raise LostLeadership("the lease moved on: the write was fenced off")

    def _acknowledged(self, sent: Sent, reply: Any) -> None:
        self._fenced_off(reply)
        if sent.position is not None:
            self.store.committed(sent.position)
        count_keys(sent.packed.deleted, sent.packed.bumped, sent.packed.stored)

    def _release(self, conn: Connection, broken: bool = False) -> None:
        if broken:
            conn.disconnect()  # a reply may be unread on it
        if self.pool is not None:
            self.pool.release(conn)

    def _send_fenced(self, packed: PackedOps, saved: bytes, state: bytes, marks: Sequence[str] = ()) -> None:
        value = self.leadership.value
        if value is None:
            raise LostLeadership("not the leader")
        script_keys, args = self._fenced_call(value, packed, saved, state, marks)
        self._fenced_off(self._fenced(keys=script_keys, args=args))

    def _fenced_call(self, value: str, packed: PackedOps, saved: bytes, state: bytes,
                     marks: Sequence[str]) -> tuple[list[str], list[Any]]:
        """FENCED_APPLY's keys and arguments (see cachetail/keyspace.py)."""
        return ([*self._state_keys, *marks, *packed.keys],
                [value, saved, packed.layout, state, len(marks), self._publish, *packed.values])

    def _marks(self, keys: list[str]) -> list[str]:
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
        for key, op in zip(keys, ops):
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
        self.retry("marking every watermark", lambda: self.mark_all(_state(position)))
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


def _state(position: Position | None) -> bytes:
    """The GTID state after the work, as the scripts take it ('' when unknown)."""
    return position.gtid.encode() if position is not None and position.gtid else b""


def count_keys(deleted: int, bumped: int, stored: int) -> None:
    for action, count in (("deleted", deleted), ("generation_bumped", bumped), ("refreshed", stored)):
        if count:
            m.KEYS.labels(action).inc(count)


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
