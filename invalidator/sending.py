"""Committed transactions -> Redis, with two scripts in flight while the worker is behind.

A transaction's batch reaches the :class:`Sender` at its XID.  Caught up, it is applied
at once (:meth:`Applier.apply`).  Behind (more binlog already here), it joins a
:class:`Group` of transactions sharing one script, and a full group is handed to the
sender's thread, whose task writes the group's script on the connection of the one
before and then reads that one's reply (:meth:`Writer.send_behind`): Redis runs one
script while the next transactions are decoded.  Replies are accounted for in the order
the groups were written, through ``applied``; a position that moved past a group in
flight waits until that group is acknowledged, so the position is never saved ahead of
the work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import redis
from redis.connection import Connection

from invalidator.applier import REDIS_ERRORS, Applier, count_keys, state_of
from invalidator.apply import Batch, PackedOps, pack_ops
from invalidator.leader import LostLeadership
from invalidator.position import Position

# a group handed to the sender: its batch, position, transactions, first binlog ts, first received
Sending = tuple[Batch, Position, int, float, float]


@dataclass(frozen=True)
class Sent:
    """A batch whose script is written to Redis and whose reply is not read yet: Redis runs
    it while the sender packs the next one (see :meth:`Writer.send_behind`)."""

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


class Written(Protocol):
    """A script written and not yet acknowledged (:class:`Sent`)."""

    def replied(self) -> bool: ...


class Transport(Protocol):
    """What the sender needs of a :class:`Writer`."""

    def apply(self, batch: Batch, position: Position | None) -> None: ...

    def send_behind(self, batch: Batch, position: Position | None, earlier: Any) -> Any: ...

    def receive(self, sent: Any) -> None: ...

    def drop(self, sent: Any) -> None: ...


class Group:
    """Transactions applied together while the worker is behind.

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


class InFlight:
    """The sender's task and the groups it acknowledges, in order.  The task reads the reply
    of the group before and writes its own: the last group may be left written but
    unacknowledged, its :class:`Written` the task's result."""

    __slots__ = ("future", "groups")

    def __init__(self, future: Future[Any], groups: list[Sending]) -> None:
        self.future = future
        self.groups = groups

    def settled(self) -> bool:
        """Done, reply included: accounting for it now does not wait for Redis."""
        if not self.future.done():
            return False
        if self.future.exception() is not None:
            return True
        sent: Written | None = self.future.result()
        return sent is None or sent.replied()


class Sender:
    """The worker's sending pipeline: the group being collected and the send in flight."""

    def __init__(self, transport: Transport, applied: Callable[[Batch, Position, int, float, float], None],
                 advanced: Callable[[Position], None]) -> None:
        self.transport = transport
        self.applied = applied  # Redis acknowledged these transactions, up to this position
        self.advanced = advanced  # past work that touched nothing cached, nothing before it in flight
        self.group = Group(None)
        self.inflight: InFlight | None = None
        self.advanced_to: Position | None = None  # passed while a send was in flight
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="invalidator-send")

    def follow(self, stream: Any) -> None:
        """A new stream: whether the worker is behind is asked of it."""
        self.group = Group(stream)

    def idle(self) -> bool:
        """Nothing deferred: every committed transaction is sent."""
        return self.group.position is None

    def behind(self) -> bool:
        return self.group.behind()

    def drop_group(self) -> None:
        """Forget the deferred transactions (the worker stopped before an event it cannot read)."""
        self.group = Group(None)

    def defer(self, batch: Batch, position: Position, event_ts: float, received: float) -> bool:
        """``batch`` ended a transaction at ``position``: True to wait for more before sending."""
        return self.group.defer(batch, position, event_ts, received)

    def flush(self, batch: Batch) -> bool:
        """Send what the deferred transactions collected, with their last position; False: nothing to send."""
        group = self.group
        if not batch or group.position is None:
            return False
        if group.behind():  # more binlog is here already: decode it while Redis applies this
            earlier = self.collect()
            self.advanced_to = None  # this group carries a later position
            position, count, first_ts, first_received = group.take()
            sending = (batch, position, count, first_ts, first_received)
            future = self.executor.submit(self.transport.send_behind, batch, position,
                                          earlier[0] if earlier is not None else None)
            self.inflight = InFlight(future, [earlier[1], sending] if earlier is not None else [sending])
        else:
            self.finish()
            position, count, first_ts, first_received = group.take()
            self.transport.apply(batch, position)
            self.applied(batch, position, count, first_ts, first_received)
        return True

    def collect(self) -> tuple[Any, Sending] | None:
        """Wait for the sender's task (its exception is raised here) and account for the groups
        Redis acknowledged; the group it left written but unacknowledged, if any."""
        inflight, self.inflight = self.inflight, None
        if inflight is None:
            return None
        sent = inflight.future.result()
        done = inflight.groups if sent is None else inflight.groups[:-1]
        for sending in done:
            self.applied(*sending)
        return None if sent is None else (sent, inflight.groups[-1])

    def finish(self) -> None:
        """Wait until every group sent is acknowledged, then account for them."""
        pending = self.collect()
        if pending is not None:
            self.transport.receive(pending[0])
            self.applied(*pending[1])
        if self.advanced_to is not None:
            position, self.advanced_to = self.advanced_to, None
            if self.group.position is None:  # else a later group carries a later position
                self.advanced(position)

    def holds(self, position: Position) -> bool:
        """Past work that touched nothing cached: True when a deferred group or the send in
        flight carries ``position`` on (else the caller takes it up now)."""
        if self.group.position is not None:
            self.group.position = position
            return True
        if self.inflight is not None and self.inflight.settled():
            self.finish()
        if self.inflight is not None:  # taken up once the send in flight is acknowledged
            self.advanced_to = position
            return True
        return False

    def abandon(self) -> None:
        """Leading ends (stop, lease lost): let the sender's task end, whatever its outcome,
        and leave a reply still unread (the new leader resumes from the saved position)."""
        inflight, self.inflight, self.advanced_to = self.inflight, None, None
        if inflight is None:
            return
        try:
            sent = inflight.future.result()
        except Exception:  # noqa: BLE001 - the new leader resumes from the saved position
            return
        if sent is not None:
            self.transport.drop(sent)

    def close(self) -> None:
        self.executor.shutdown(wait=True)


class Writer:
    """Scripts written behind the one in flight, on one connection of one Redis node: the
    :class:`Sender`'s transport while behind.  What goes wrong is recovered by
    :meth:`Applier.apply`'s retries: a cut connection or NOSCRIPT (after a restart) applies
    the unacknowledged batches again, merged, with the later position; a fenced-off write
    (another leader) raises :class:`LostLeadership`."""

    def __init__(self, applier: Applier) -> None:
        self.applier = applier
        self.apply = applier.apply

    def send_behind(self, batch: Batch, position: Position | None, earlier: Sent | None) -> Sent | None:
        """Write ``batch``'s script on the connection ``earlier``'s is on, then read ``earlier``'s
        reply: Redis, which runs a connection's commands in order, runs one script while the
        next is packed and written.  Returns ``batch`` as written and unacknowledged (its reply
        is read by the next call, or :meth:`receive`), or None once it is acknowledged too.

        After a fault both are applied again in one script, with ``batch``'s position, by
        :meth:`apply`'s retries: never ``earlier``'s ops after ``batch``'s, so a key both
        touch ends as ``batch`` left it, whichever of the two Redis had run.  Batches with
        DDL clears, and every batch on a cluster, take :meth:`apply` after ``earlier``."""
        applier = self.applier
        if applier.pool is None or batch.clear:
            self.receive(earlier)
            self.apply(batch, position)
            return None
        keys = list(batch.ops)
        packed = pack_ops(keys, list(batch.ops.values()))
        saved = applier.saved_json(position)
        if earlier is not None:
            conn = earlier.conn
        else:
            try:
                conn = applier.pool.get_connection()
            except REDIS_ERRORS:
                self.apply(batch, position)
                return None
        try:
            value = applier.leadership.value
            if value is None:
                raise LostLeadership("not the leader")
            applier.before_send(batch)
            if not conn.is_connected:  # it would reconnect by itself, and the reply be lost
                raise redis.ConnectionError("the connection of the script in flight is closed")
            script_keys, args = applier.fenced_call(value, packed, saved, state_of(position), applier.marks(keys))
            # no health check: its PING's reply would be read before the one in flight
            conn.send_command(  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
                "EVALSHA", applier.fenced.sha, len(script_keys), *script_keys, *args, check_health=False)
            if earlier is not None:
                self.acknowledged(earlier, conn.read_response())
        except (*REDIS_ERRORS, redis.ResponseError):  # a cut connection; NOSCRIPT after a restart
            applier.release(conn, broken=True)
            self.apply(batch if earlier is None else earlier.batch.merged(batch), position)
            return None
        except BaseException:
            applier.release(conn, broken=True)
            raise
        return Sent(batch, position, packed, conn)

    def receive(self, sent: Sent | None) -> None:
        """Read a written script's reply (see :meth:`send_behind`); after a fault, apply it again."""
        if sent is None:
            return
        applier = self.applier
        try:
            if not sent.conn.is_connected:
                raise redis.ConnectionError("the connection of the script in flight is closed")
            self.acknowledged(sent, sent.conn.read_response())
        except (*REDIS_ERRORS, redis.ResponseError):
            applier.release(sent.conn, broken=True)
            self.apply(sent.batch, sent.position)
            return
        except BaseException:
            applier.release(sent.conn, broken=True)
            raise
        applier.release(sent.conn)

    def drop(self, sent: Sent) -> None:
        """Leading ended: the reply is not wanted (the next leader resumes from the saved position)."""
        self.applier.release(sent.conn, broken=True)

    def acknowledged(self, sent: Sent, reply: Any) -> None:
        self.applier.fenced_off(reply)
        if sent.position is not None:
            self.applier.store.committed(sent.position)
        count_keys(sent.packed.deleted, sent.packed.bumped, sent.packed.stored)
