"""The main loop: follow the binlog, apply each transaction at its commit, save the position.

At-least-once: a transaction's keys and the position after it go to Redis in
one MULTI/EXEC at its XID; the position is never saved inside a transaction
and never ahead of what Redis acknowledged.  A restart or reconnect resumes
from the last such position and may re-apply work (deletes are idempotent).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pymysql
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from pymysqlreplication.event import HeartbeatLogEvent, QueryEvent, RotateEvent, XidEvent
from pymysqlreplication.row_event import RowsEvent

from metrics import invalidator as m

from invalidator import decode
from invalidator.apply import Applier, Batch, Group, Stopped, backoff_delays
from invalidator.checks import CheckFailed, run_checks
from invalidator.position import Position, make_store
from invalidator.service import Watchdog, sd_notify, start_http
from invalidator.settings import InvalidatorSettings
from invalidator.stream import (
    control_connection, current_position, is_connection_error, open_stream, source_id,
    unusable_position,
)

log = logging.getLogger("invalidator")
T = TypeVar("T")
IDLE_SAVE_S = 1.0  # a position moved only by unrelated transactions is saved at most this often
OWNED_DDL = re.compile(r"\b(users|products)\b", re.IGNORECASE)
NOT_A_BOUNDARY = ("BEGIN", "SAVEPOINT", "ROLLBACK TO", "XA START", "XA END", "XA PREPARE")


class Worker:
    def __init__(self, settings: InvalidatorSettings, stop: threading.Event | None = None,
                 serve_http: bool = True) -> None:
        self.settings = settings
        self.stop = stop or threading.Event()
        self.serve_http = serve_http
        self.keyspace = settings.keyspace
        self.refresh = settings.mode == "refresh"
        self.position: Position | None = None  # applied (acknowledged) up to here
        self.saved: Position | None = None  # persisted up to here
        self.saved_at = 0.0
        self.streaming = False
        self.ready = False
        self.last_event = 0.0  # monotonic
        self.watchdog = Watchdog()
        self.group = Group(None)
        self.mysql_delays = backoff_delays(0.1, settings.retry_max_s)

    # ------------------------------------------------------------------ run

    def run(self) -> int:
        """Follow until stopped; 0 on a stop request.  Raises CheckFailed on bad configuration."""
        s = self.settings
        # No retries inside redis-py (its default backs off for up to ~15 s): the
        # Applier retries itself, watching for stop requests and pinging the watchdog.
        client = redis.Redis(**{**s.redis.client_kwargs(), "ssl": s.redis.tls,
                                "socket_timeout": max(s.redis.socket_timeout_s, 1.0)},
                             retry=Retry(NoBackoff(), 0))
        store = make_store(s.position_store, client, self.keyspace, s.state_dir)
        self.applier = Applier(client, self.keyspace, store, self.stop, s.retry_max_s,
                               on_wait=self.watchdog.ping)
        http = start_http(s.metrics_host, s.metrics_port, self.health) if self.serve_http else None
        try:
            self.source_id = self.mysql(lambda conn: (run_checks(conn, s), source_id(conn))[1])
            position = self.initial_position()
            while not self.stop.is_set():
                position = self.follow_from(position)
        except Stopped:
            pass
        finally:
            sd_notify("STOPPING=1")
            m.STREAMING.set(0)
            if http:
                http.shutdown()
                http.server_close()
            client.close()
        log.info("stopped at %s", self.position)
        return 0

    def initial_position(self) -> Position:
        saved = self.applier.load()
        if saved is None:
            return self.full_invalidation("no_position", "no saved position")
        if saved.source_id and saved.source_id != self.source_id:
            return self.full_invalidation("bad_position", f"the saved position {saved} belongs to"
                                          f" server_id {saved.source_id}, not {self.source_id}")
        log.info("resuming from %s", saved)
        self.position = self.saved = saved
        return saved

    def follow_from(self, position: Position) -> Position:
        """Stream from ``position`` until stopped or the connection fails; the position to resume."""
        stream = None
        try:
            stream = open_stream(self.settings, position)
            self.follow(stream, position)
        except Stopped:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure means: reconnect from our position
            reason = unusable_position(exc)
            if reason:
                return self.full_invalidation(reason, f"the server cannot serve {position}: {exc}")
            if is_connection_error(exc):
                log.warning("binlog stream lost (%s); reconnecting from %s", exc, self.position)
            else:
                log.exception("binlog stream failed; reconnecting from %s", self.position)
            m.RECONNECTS.labels("mysql").inc()
            self.stop.wait(next(self.mysql_delays))
        finally:
            self.streaming = False
            m.STREAMING.set(0)
            if stream is not None:
                try:
                    stream.close()
                except Exception:  # noqa: BLE001
                    pass
        return self.position or position

    # ----------------------------------------------------------------- loop

    def follow(self, stream: Any, position: Position) -> None:
        batch = Batch(self.keyspace, self.refresh)
        self.group = Group(stream)
        log_file = position.log_file
        for event in stream:
            received = time.time()
            self.alive()
            if isinstance(event, RowsEvent):
                decode.add_rows(batch, event)
                m.ROW_EVENTS.labels(decode.table_label(event), decode.operation(event)).inc()
            elif isinstance(event, XidEvent):
                batch = self.commit(batch, Position(log_file, event.packet.log_pos, self.source_id),
                                    event.timestamp, received)
            elif isinstance(event, QueryEvent):
                batch = self.query(batch, event, log_file, received)
            elif isinstance(event, RotateEvent):  # only ever between transactions
                batch = self.flush(batch)
                log_file = event.next_binlog
                self.advance(Position(log_file, event.position, self.source_id))
            elif isinstance(event, HeartbeatLogEvent):  # the server is idle: nothing is open
                batch = self.flush(batch)
                m.SECONDS_BEHIND.set(0)
                self.save_if_due(0.0)
            if self.stop.is_set():
                return
        raise ConnectionError("the binlog stream ended")

    def alive(self) -> None:
        self.last_event = time.monotonic()
        m.LAST_EVENT_SECONDS.set(time.time())
        if not self.streaming:
            self.streaming = True
            m.STREAMING.set(1)
            self.mysql_delays = backoff_delays(0.1, self.settings.retry_max_s)
            log.info("following the binlog from %s (mode %s)", self.position, self.settings.mode)
            if not self.ready:
                self.ready = True
                sd_notify("READY=1\nSTATUS=following the binlog")
        self.watchdog.ping()

    def commit(self, batch: Batch, position: Position, event_ts: int, received: float) -> Batch:
        """A transaction ended at ``position``: apply its keys with the position, or just advance.

        While the worker is behind (the next event is already on the socket) the keys of up to
        GROUP_MAX transactions ride in one pipeline with the last one's position: still a
        transaction boundary, still saved only with the work before it.  Caught up, every
        transaction is applied at once.
        """
        if not batch:
            self.advance(position)
            return batch
        if self.group.defer(batch, position, event_ts, received):
            return batch
        return self.flush(batch)

    def flush(self, batch: Batch) -> Batch:
        """Apply what the (possibly grouped) transactions collected, with their last position."""
        group = self.group
        if not batch or group.position is None:
            return batch
        position, count, first_ts, first_received = group.take()
        self.applier.apply(batch, position)
        done = time.time()
        self.position = self.saved = position
        self.saved_at = time.monotonic()
        m.TRANSACTIONS.inc(count)
        m.COMMIT_TO_APPLIED_SECONDS.observe(max(0.0, done - first_ts))
        m.RECEIVED_TO_APPLIED_SECONDS.observe(done - first_received)
        m.SECONDS_BEHIND.set(max(0.0, done - first_ts))
        self.show(position)
        return Batch(self.keyspace, self.refresh)

    def query(self, batch: Batch, event: QueryEvent, log_file: str, received: float) -> Batch:
        text = event.query.strip() if isinstance(event.query, str) else event.query.decode(errors="replace")
        upper = text.upper()
        if upper.startswith(NOT_A_BOUNDARY):
            return batch
        position = Position(log_file, event.packet.log_pos, self.source_id)
        schema = event.schema.decode(errors="replace") if isinstance(event.schema, bytes) else event.schema
        if not upper.startswith(("COMMIT", "ROLLBACK", "XA COMMIT", "XA ROLLBACK")):
            ours = schema == self.settings.mysql.database or self.settings.mysql.database in text
            for table in OWNED_DDL.findall(text) if ours else ():
                log.warning("DDL on %s: %s -> invalidating its keys", table, text[:200])
                if table.lower() == "users":
                    batch.clear_users = True
                else:
                    batch.products = True
        return self.commit(batch, position, event.timestamp, received)

    def advance(self, position: Position) -> None:
        """Move past work that touched nothing cached; persisted lazily."""
        if self.group.position is not None:  # a deferred group waits: it carries the position
            self.group.position = position
            return
        self.position = position
        self.save_if_due(IDLE_SAVE_S)

    def save_if_due(self, min_age_s: float) -> None:
        if self.position is None or self.position == self.saved:
            return
        if time.monotonic() - self.saved_at < min_age_s:
            return
        self.applier.save(self.position)
        self.saved = self.position
        self.saved_at = time.monotonic()
        self.show(self.position)

    def show(self, position: Position) -> None:
        m.POSITION.set(position.log_pos)
        m.POSITION_FILE_INDEX.set(position.file_index)

    # ------------------------------------------------------- full invalidation

    def full_invalidation(self, reason: str, why: str) -> Position:
        """Every owned key goes; then follow from the server's current position."""
        log.error("FULL INVALIDATION (%s): %s; deleting every key under %r and following from now",
                  reason, why, self.keyspace.owned_pattern())
        position = self.mysql(current_position)  # first: changes after it are replayed
        cleared = self.applier.clear_owned()
        self.applier.save(position)
        self.position = self.saved = position
        self.saved_at = time.monotonic()
        self.show(position)
        m.FULL_INVALIDATIONS.labels(reason).inc()
        log.error("FULL INVALIDATION (%s) done: %d keys deleted; following from %s", reason, cleared, position)
        return position

    # ------------------------------------------------------------- helpers

    def mysql(self, action: Callable[[pymysql.connections.Connection], T]) -> T:
        """Run ``action`` on a fresh control connection, retrying connection failures."""
        delays = backoff_delays(0.1, self.settings.retry_max_s)
        while True:
            try:
                conn = control_connection(self.settings)
                try:
                    return action(conn)
                finally:
                    conn.close()
            except CheckFailed:
                raise
            except pymysql.err.OperationalError as exc:
                if exc.args[0] == 1045:
                    raise CheckFailed(f"MySQL rejected DB_USER {self.settings.mysql.user!r}: {exc.args[1]}") from None
                if not is_connection_error(exc):
                    raise
                log.warning("MySQL unavailable (%s); retrying", exc)
            m.RECONNECTS.labels("mysql").inc()
            self.watchdog.ping()
            if self.stop.wait(next(delays)):
                raise Stopped

    def health(self) -> dict[str, Any]:
        age = time.monotonic() - self.last_event if self.last_event else None
        redis_ok = getattr(self, "applier", None) is not None and self.applier.redis_ok
        healthy = self.streaming and redis_ok and age is not None and age < self.settings.stale_after_s
        return {"healthy": healthy, "streaming": self.streaming, "redis_ok": redis_ok,
                "last_event_age_s": None if age is None else round(age, 3),
                "position": None if self.position is None else str(self.position),
                "mode": self.settings.mode}
