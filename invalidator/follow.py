"""The leader's loop over one binlog stream: events -> a transaction's batch -> the sender.

A row's path, one way: the connection reads a claimed table's rows event itself
(:class:`~invalidator.packets.RowsPacket`, see :meth:`Follower.claim`);
:func:`invalidator.decode.add_packet` writes its ops into the open :class:`Batch`
(the compiled walk, else the generated parsers and the table's rules); at the XID
:meth:`Follower.commit` hands the batch and the position after it to the
:class:`~invalidator.sending.Sender`, which applies it in Redis; the acknowledgement
comes back to :meth:`Follower.applied`, which moves the position.  Other events go
through the handler table (:meth:`Follower.handler`); :meth:`Follower.tick` checks
liveness, stop, lease and replay requests between them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pymysql
from pymysqlreplication.event import (
    GtidEvent, HeartbeatLogEvent, MariadbGtidEvent, QueryEvent, RotateEvent, XidEvent,
)
from pymysqlreplication.row_event import RowsEvent

from cachetail.schema import Catalog
from metrics import invalidator as m

from invalidator import decode, fastrows
from invalidator.applier import Applier
from invalidator.apply import Batch
from invalidator.audit import Auditor
from invalidator.catalog import Followed, Weights, load_catalog
from invalidator.checks import CheckFailed
from invalidator.gtid import Tracker, tracker
from invalidator.health import Status
from invalidator.leader import Leadership
from invalidator.packets import RowsPacket
from invalidator.position import Position
from invalidator.progress import Progress
from invalidator.recovery import Recovery
from invalidator.resume import Plan
from invalidator.sending import Sender
from invalidator.service import Watchdog, sd_notify
from invalidator.settings import InvalidatorSettings

log = logging.getLogger("invalidator")
IDLE_SAVE_S = 1.0  # a position moved only by unrelated transactions is saved at most this often
NOT_A_BOUNDARY = ("BEGIN", "SAVEPOINT", "ROLLBACK TO", "XA START", "XA END", "XA PREPARE")
CHECK_EVERY = 64  # rows events read by the connection between liveness, stop and lease checks
Handler = Callable[[Batch, Any, float], Batch]  # (open batch, event, received) -> the open batch


class Replay(Exception):
    """Follow again from ``position``: Redis may have lost what was applied after it."""

    def __init__(self, position: Position) -> None:
        self.position = position
        super().__init__(f"replay from {position}")


class Follower:
    """The leader's reader of the binlog: one stream at a time (see the module docstring)."""

    def __init__(self, settings: InvalidatorSettings, stop: threading.Event, status: Status,
                 watchdog: Watchdog, leadership: Leadership, applier: Applier, sender: Sender,
                 progress: Progress, recovery: Recovery, followed: Followed, weights: Weights) -> None:
        self.settings = settings
        self.stop = stop
        self.status = status
        self.watchdog = watchdog
        self.leadership = leadership
        self.applier = applier
        self.sender = sender
        self.progress = progress
        self.recovery = recovery
        self.followed = followed
        self.weights = weights
        self.refresh = settings.mode == "refresh"
        self.auditor: Auditor | None = None
        self.gtids: Tracker | None = None  # the GTID state as the stream moves on
        self.log_file = ""
        self.source: tuple[int, str] = (0, "")  # server_id and UUID of the server followed
        self.row_counters: dict[tuple[str, str], Any] = {}  # ROW_EVENTS children by (table, operation)
        self.handlers: dict[type, tuple[Handler, bool]] = {}  # by event type: (handler, marks liveness)
        self.kinds: tuple[tuple[type | tuple[type, ...], tuple[Handler, bool]], ...] = (
            (RowsEvent, (self.rows, True)), (XidEvent, (self.xid, True)),
            ((MariadbGtidEvent, GtidEvent), (self.gtid, True)), (QueryEvent, (self.query, True)),
            (RotateEvent, (self.rotate, False)), (HeartbeatLogEvent, (self.heartbeat, True)))

    # ----------------------------------------------------------------- loop

    def follow(self, stream: Any, plan: Plan) -> None:
        batch = self.new_batch()
        self.sender.follow(stream)
        position = plan.position
        self.log_file = position.log_file
        self.source = plan.source.identity
        self.gtids = None if position.gtid is None else tracker(plan.source.flavor, position.gtid)
        self.progress.following(plan)
        counters = self.row_counters
        handlers = self.handlers
        quiet = 0
        for event in stream:
            if type(event) is RowsPacket:  # read by the connection itself (the hot path)
                table = decode.add_packet(batch, event, self.followed.rules, self.weights)
                counter = counters.get((table, event.operation))
                if counter is None:
                    counter = counters[(table, event.operation)] = m.ROW_EVENTS.labels(table, event.operation)
                counter.inc()
                quiet += 1
                if quiet < CHECK_EVERY:
                    continue  # liveness, stop and lease are checked every CHECK_EVERY such events
                quiet = 0
                if self.tick(None, True):
                    return
                continue
            handle, live = handlers.get(type(event)) or self.handler(type(event))
            batch = handle(batch, event, time.time())
            if self.tick(batch, live):
                return
        raise ConnectionError("the binlog stream ended")

    def handler(self, kind: type) -> tuple[Handler, bool]:
        """The handler of an event type (its first match in ``kinds``), remembered."""
        found = next((entry for types, entry in self.kinds if issubclass(kind, types)), (self.other, False))
        self.handlers[kind] = found
        return found

    def tick(self, batch: Batch | None, live: bool) -> bool:
        """Between events: liveness (``live``: the event shows the server is there), then stop
        (True), the lease, and a requested replay once no transaction is open (``batch`` given,
        at an event boundary)."""
        if live:
            self.alive()
        if self.stop.is_set():
            return True
        self.leadership.check()
        if batch is not None and self.progress.replay_since is not None and not batch and self.sender.idle():
            self.replay()
        return False

    def alive(self) -> None:
        status = self.status
        status.last_event = time.monotonic()
        m.LAST_EVENT_SECONDS.set(time.time())
        if not status.streaming:
            status.streaming = True
            m.STREAMING.set(1)
            log.info("following the binlog from %s (mode %s; row walk %s)", self.progress.position,
                     self.settings.mode, fastrows.describe())
            if not status.ready:
                status.ready = True
                sd_notify("READY=1\nSTATUS=following the binlog")
        self.watchdog.ping()

    # ------------------------------------------------------------- handlers

    def rows(self, batch: Batch, event: RowsEvent, received: float) -> Batch:
        table = decode.add_rows(batch, event, self.followed.rules, self.weights)
        m.ROW_EVENTS.labels(table, decode.operation(event)).inc()
        return batch

    def xid(self, batch: Batch, event: XidEvent, received: float) -> Batch:
        gtid = self.gtids.commit() if self.gtids is not None else None
        source_id, source_uuid = self.source
        return self.commit(batch, Position(self.log_file, event.packet.log_pos, source_id, gtid, source_uuid),
                           event.timestamp, received)

    def gtid(self, batch: Batch, event: MariadbGtidEvent | GtidEvent, received: float) -> Batch:
        if self.gtids is not None:
            self.gtids.add(event.gtid)
        return batch

    def query(self, batch: Batch, event: QueryEvent, received: float) -> Batch:
        text = event.query.strip() if isinstance(event.query, str) else event.query.decode(errors="replace")
        upper = text.upper()
        if upper.startswith(NOT_A_BOUNDARY):
            return batch
        gtid = self.gtids.commit() if self.gtids is not None else None
        position = Position(self.log_file, event.packet.log_pos, self.source[0], gtid, self.source[1])
        schema = event.schema.decode(errors="replace") if isinstance(event.schema, bytes) else event.schema
        if not upper.startswith(("COMMIT", "ROLLBACK", "XA COMMIT", "XA ROLLBACK")):
            ours = schema == self.settings.mysql.database or self.settings.mysql.database in text
            cleared = self.followed.cleared_by(text) if ours else set()
            if cleared:
                log.warning("DDL on a followed table: %s -> invalidating its keys (%s)", text[:200],
                            ", ".join(sorted(cleared)))
                batch.clear |= cleared
                batch = self.commit(batch, position, event.timestamp, received)
                batch = self.flush(batch)
                self.sender.finish()
                self.reload_catalog()
                return batch
        return self.commit(batch, position, event.timestamp, received)

    def rotate(self, batch: Batch, event: RotateEvent, received: float) -> Batch:
        # The server's fake rotate (timestamp 0) names the file only; after a GTID
        # start its offset is 4, not where the stream starts.
        self.log_file = event.next_binlog
        if event.timestamp:
            self.alive()
            batch = self.flush(batch)  # a real rotate is only ever between transactions
            gtid = self.gtids.state if self.gtids is not None else None
            self.advance(Position(self.log_file, event.position, self.source[0], gtid, self.source[1]))
        return batch

    def heartbeat(self, batch: Batch, event: HeartbeatLogEvent, received: float) -> Batch:
        """The server is idle: nothing is open."""
        batch = self.flush(batch)
        self.sender.finish()
        m.SECONDS_BEHIND.set(0)
        self.recovery.progressed()
        self.save_if_due(0.0)
        return batch

    def other(self, batch: Batch, event: Any, received: float) -> Batch:
        return batch

    # ---------------------------------------------------------- transactions

    def commit(self, batch: Batch, position: Position, event_ts: int, received: float) -> Batch:
        """A transaction ended at ``position``: apply its keys with the position, or just advance.

        While the worker is behind (the next event is already on the socket) the keys of up to
        Group.MAX_TRANSACTIONS ride in one script with the last one's position: still a
        transaction boundary, still saved only with the work before it.  Caught up, every
        transaction is applied at once.
        """
        if not batch:
            self.advance(position)
            return batch
        if self.sender.defer(batch, position, event_ts, received):
            return batch
        return self.flush(batch)

    def flush(self, batch: Batch) -> Batch:
        """Send what the deferred transactions collected; the batch to collect into next."""
        return self.new_batch() if self.sender.flush(batch) else batch

    def new_batch(self) -> Batch:
        """Refresh mode writes row images; while a replay re-applies old transactions it only
        deletes, so an old image never overwrites a newer one, not even for a moment."""
        return Batch(self.refresh and self.progress.replay_until is None)

    def applied(self, batch: Batch, position: Position, count: int, first_ts: float, first_received: float) -> None:
        """Redis acknowledged the transactions up to ``position`` (called by the sender)."""
        if self.auditor is not None:
            self.auditor.changed(list(batch.ops), first_ts)
        done = time.time()
        self.progress.persisted(position)
        self.progress.note(position)
        m.TRANSACTIONS.inc(count)
        m.COMMIT_TO_APPLIED_SECONDS.observe(max(0.0, done - first_ts))
        m.RECEIVED_TO_APPLIED_SECONDS.observe(done - first_received)
        m.SECONDS_BEHIND.set(max(0.0, done - first_ts))
        self.recovery.progressed()

    def advance(self, position: Position) -> None:
        """Move past work that touched nothing cached; persisted lazily."""
        if not self.sender.holds(position):
            self.advanced(position)

    def advanced(self, position: Position) -> None:
        """Past work that touched nothing cached, with nothing before it in flight."""
        self.progress.position = position
        self.recovery.progressed()
        # caught up, at once: a read waiting for this transaction's GTID (Cachetail-Min-GTID)
        # learns it is applied; behind, at most every IDLE_SAVE_S
        self.save_if_due(IDLE_SAVE_S if self.sender.behind() else 0.0)

    def save_if_due(self, min_age_s: float) -> None:
        progress = self.progress
        if progress.position is None or progress.position == progress.saved:
            return
        if time.monotonic() - progress.saved_at < min_age_s:
            return
        self.applier.save(progress.position)
        progress.persisted(progress.position)
        progress.note(progress.position)

    def replay(self) -> None:
        self.sender.finish()
        start = self.progress.replay_start()
        if start is None:
            raise Replay(self.recovery.full_invalidation(
                "failover_window", "the replaced Redis primary was not seen in sync within the"
                " replay window"))
        raise Replay(start)

    # ------------------------------------------------------------- catalog

    def claim(self, table_map: Any) -> bool:
        """Whether the connection reads this table's rows events itself (see packets.Filter):
        the images the configured mode needs can be read from the bytes."""
        rules = self.followed.rules.get(table_map.table)
        return rules is not None and decode.claims(table_map, rules.needed, self.settings.mode == "refresh")

    def reload_catalog(self) -> None:
        """After DDL on a followed table its columns may differ: resolve the declaration again.
        If it no longer fits the table, say so and stop refreshing (deletes stay right)."""
        try:
            catalog = self.recovery.mysql(lambda conn: declared_catalog(self.settings, conn))
        except CheckFailed as exc:
            log.error("after DDL the declaration no longer fits the database: %s; deleting instead of"
                      " refreshing until it does", exc)
            self.refresh = False
            return
        self.followed = Followed(catalog, self.settings.keyspace)
        self.refresh = self.settings.mode == "refresh"


def declared_catalog(settings: InvalidatorSettings, conn: pymysql.connections.Connection) -> Catalog:
    """The declaration resolved against the followed database (see :func:`load_catalog`)."""
    return load_catalog(conn, str(settings.config_path), settings.mysql.database,
                        refresh=settings.mode == "refresh")
