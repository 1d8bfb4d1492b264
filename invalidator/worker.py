"""The main loop: lead or stand by; follow the binlog, apply each transaction at its commit.

At-least-once: a transaction's keys and the position after it go to Redis in
one fenced script at its XID (on a cluster: the keys slot by slot, then the
position); the position is never saved inside a transaction and never ahead
of what Redis acknowledged.  A restart, a reconnect or a takeover by a
standby resumes from the last such position and may re-apply work (deletes
are idempotent).  A Redis failover or restart makes the worker replay the
window whose writes the new primary may not have (see topology.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import pymysql
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from pymysqlreplication.event import (
    GtidEvent, HeartbeatLogEvent, MariadbGtidEvent, QueryEvent, RotateEvent, XidEvent,
)
from pymysqlreplication.row_event import RowsEvent

from cachetail import config as declaration
from cachetail.backoff import Backoff
from cachetail.keyspace import prepare_slot_tags
from cachetail.schema import Catalog
from metrics import invalidator as m

from invalidator import decode, fastrows
from invalidator.apply import REDIS_ERRORS, Applier, Batch, Group, Sent, Stopped
from invalidator.audit import Auditor
from invalidator.catalog import Followed, Weights, load_catalog
from invalidator.checks import CheckFailed, recheck_binlog, run_checks
from invalidator.errors import FULL, RESUME_BY_GTID, RETRY, Failure, classify, is_connection_error
from invalidator.gtid import Tracker, tracker
from invalidator.lag import FollowLag, reached
from invalidator.leader import Leadership, LostLeadership
from invalidator.packets import RowsPacket
from invalidator.position import Position, make_store
from invalidator.resume import FullInvalidationNeeded, Plan, plan_resume
from invalidator.service import Watchdog, sd_notify, start_http
from invalidator.settings import InvalidatorSettings
from invalidator.source import current_position
from invalidator.stream import control_connection, open_stream
from invalidator.topology import FailoverWatch
from invalidator.unsupported import UnsupportedEvent

log = logging.getLogger("invalidator")
T = TypeVar("T")
IDLE_SAVE_S = 1.0  # a position moved only by unrelated transactions is saved at most this often
NOT_A_BOUNDARY = ("BEGIN", "SAVEPOINT", "ROLLBACK TO", "XA START", "XA END", "XA PREPARE")
FAILURES_UNHEALTHY = 3  # consecutive failed attempts to follow: --check fails
RING_STEP_S = 0.1  # replay points are kept at most this often: an earlier point is always safe
CHECK_EVERY = 64  # rows events read by the connection between liveness, stop and lease checks
# at most one full invalidation this often past events it cannot read (a session still
# compressing after the global fix would otherwise empty the cache at every transaction)
UNBLOCK_SPACING_S = 60.0


class Replay(Exception):
    """Follow again from ``position``: Redis may have lost what was applied after it."""

    def __init__(self, position: Position) -> None:
        self.position = position
        super().__init__(f"replay from {position}")


def build_redis(s: InvalidatorSettings) -> redis.Redis | redis.RedisCluster:
    # No retries inside redis-py (its default backs off for up to ~15 s): the
    # Applier retries itself, watching for stop requests and pinging the watchdog.
    kwargs = {**s.redis.client_kwargs(), "ssl": s.redis.tls,
              "socket_timeout": max(s.redis.socket_timeout_s, 1.0)}
    if s.redis.cluster:
        return redis.RedisCluster(**kwargs, retry=Retry(NoBackoff(), 1))
    return redis.Redis(**kwargs, retry=Retry(NoBackoff(), 0))


# a group handed to the sender: its batch, position, transactions, first binlog ts, first received
Sending = tuple[Batch, Position, int, float, float]


class InFlight:
    """The sender's task and the groups it acknowledges, in order.  The task reads the reply
    of the group before and writes its own: the last group may be left written but
    unacknowledged, its :class:`Sent` the task's result."""

    __slots__ = ("future", "groups")

    def __init__(self, future: Future[Sent | None], groups: list[Sending]) -> None:
        self.future = future
        self.groups = groups

    def settled(self) -> bool:
        """Done, reply included: accounting for it now does not wait for Redis."""
        if not self.future.done():
            return False
        if self.future.exception() is not None:
            return True
        sent = self.future.result()
        return sent is None or sent.replied()


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
        self.mysql_delays = Backoff(0.1, settings.retry_max_s)
        self.failures = 0  # failed attempts to follow since the last real progress
        self.offset_refused = False  # the server refused the position's file and offset
        self.gtids: Tracker | None = None  # the GTID state as the stream moves on
        self.source_ident: tuple[int, str] | None = None  # the server followed last
        self.checked: set[tuple[int, str]] = set()  # servers whose binlog settings were checked
        self.blocked: UnsupportedEvent | None = None  # stopped before it; see unblock
        self.unblocked_at: float | None = None  # monotonic time of the last unblock
        self.lag: FollowLag | None = None
        self.auditor: Auditor | None = None
        # (monotonic time, position): every change up to the position was acknowledged by then
        self.ring: deque[tuple[float, Position]] = deque()
        self.replay_since: tuple[float | None] | None = None  # set by the failover watch
        self.replay_until: Position | None = None  # refresh is off until the replay passes this
        self.replay_reason = "failover"
        self.row_counters: dict[tuple[str, str], Any] = {}  # ROW_EVENTS children by (table, operation)
        # while behind, a group's script is sent from a thread of its own and the next
        # transactions are decoded meanwhile; the sender's task writes a group's script behind
        # the one before, whose reply it then reads (see flush, finish, Applier.send_behind)
        self.sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="invalidator-send")
        self.inflight: InFlight | None = None
        self.advanced_to: Position | None = None  # passed while a send was in flight

    # ------------------------------------------------------------------ run

    def run(self) -> int:
        """Lead or stand by until stopped; 0 on a stop request.  Raises CheckFailed on bad configuration."""
        s = self.settings
        prepare_slot_tags()  # watermark and fence keys name slots: built here, not in a batch
        client = build_redis(s)
        store = make_store(s.position_store, client, self.keyspace, s.state_dir)
        # the lease is renewed from a thread of its own, on a client of its own
        self.leadership = Leadership(build_redis(s), self.keyspace, s.identity, s.lease_s,
                                     REDIS_ERRORS)
        self.applier = Applier(client, self.keyspace, store, self.stop, s.retry_max_s,
                               self.leadership, on_wait=self.watchdog.ping,
                               watermark_slots_max=s.watermark_slots_max)
        http = start_http(s.metrics_host, s.metrics_port, self.health) if self.serve_http else None
        try:
            catalog = self.mysql(self.checked_catalog)
            self.followed = Followed(catalog, self.keyspace)
            self.weights = Weights(lambda: control_connection(self.settings))
            while not self.stop.is_set():
                self.stand_by()
                if not self.stop.is_set():
                    self.lead()
        except Stopped:
            pass
        finally:
            self.sender.shutdown(wait=True)
            sd_notify("STOPPING=1")
            m.STREAMING.set(0)
            if http:
                http.shutdown()
                http.server_close()
            self.leadership.step_down(release=True)
            self.leadership.client.close()
            client.close()
        log.info("stopped at %s", self.position)
        return 0

    def stand_by(self) -> None:
        """Wait for the leader lease (at once when nobody holds it)."""
        if not self.ready:
            self.ready = True
            sd_notify("READY=1\nSTATUS=waiting for the leader lease")
        self.leadership.wait(self.stop, on_poll=self.watchdog.ping)

    def lead(self) -> None:
        """Follow the binlog from the shared position until stopped or the lease is lost."""
        watch = None
        try:
            self.position = self.saved = None
            self.blocked = None  # the shared saved position decides; the event is met again if there
            self.ring.clear()
            self.replay_since = self.replay_until = None
            watch = FailoverWatch(self.settings.redis, self.request_replay).start()
            self.lag = FollowLag(lambda: control_connection(self.settings), lambda: self.position).start()
            self.auditor = self.start_auditor()
            position = self.initial_position()
            self.note(position)
            sd_notify("STATUS=leader: following the binlog")
            while not self.stop.is_set():
                position = self.follow_from(position)
        except LostLeadership as exc:
            log.error("%s; standing by (the new leader resumes from the saved position)", exc)
            sd_notify("STATUS=standby: another invalidator leads")
        finally:
            self.abandon()
            if watch is not None:
                watch.close()
            if self.lag is not None:
                self.lag.close()
                self.lag = None
            if self.auditor is not None:
                self.auditor.close()
                self.auditor = None
            self.streaming = False
            m.STREAMING.set(0)
            self.leadership.step_down(release=self.stop.is_set())

    def initial_position(self) -> Position:
        """The shared saved position (a standby taking over finds its predecessor's)."""
        saved = self.applier.load()
        if saved is None:
            return self.full_invalidation("no_position", "no saved position")
        log.info("resuming from %s (server_id %d, GTID %s)", saved, saved.source_id, saved.gtid)
        self.position = self.saved = saved
        self.mark_watermarks(saved)  # (a full invalidation marks every watermark itself)
        return saved

    def mark_watermarks(self, position: Position) -> None:
        """Give every slot (one node: the node) that has no watermark one, at the state this
        leader starts from: a fill from a replica reads the primary for a slot without one."""
        state = (position.gtid or "").encode()
        self.applier.retry("marking watermarks", lambda: self.applier.mark_all(state, only_missing=True))

    def follow_from(self, position: Position) -> Position:
        """Stream from ``position`` until stopped or the connection fails; the position to resume."""
        try:
            return self.stream_from(position)
        except CheckFailed as exc:  # a server that cannot be followed (now): say so, keep trying
            return self.failed(Failure(RETRY, "config", str(exc).replace("\n", "; ")), position)

    def stream_from(self, position: Position) -> Position:
        stream = None
        by_gtid = False
        try:
            if self.blocked is not None:
                return self.unblock()
            plan = self.mysql(lambda conn: plan_resume(conn, position, self.offset_refused, self.checked))
            by_gtid = plan.by_gtid
            stream = open_stream(self.settings, plan.position, plan.source, by_gtid,
                                 self.followed.catalog.tables, claim=self.claim)
            self.follow(stream, plan)
            self.finish()
        except Replay as replay:
            return replay.position
        except FullInvalidationNeeded as exc:
            return self.full_invalidation(exc.reason, str(exc))
        except UnsupportedEvent as exc:
            return self.stopped_before(exc, stream.log_file if stream is not None else None, position)
        except (Stopped, LostLeadership, CheckFailed):
            raise
        except Exception as exc:  # noqa: BLE001 - classified: retry, resume by GTID, or invalidate
            failure = classify(exc)
            if failure.kind == "unexpected":
                log.exception("binlog stream failed")
            return self.failed(failure, position, by_gtid)
        finally:
            self.streaming = False
            m.STREAMING.set(0)
            if stream is not None:
                try:
                    stream.close()
                except Exception:  # noqa: BLE001
                    pass
        return self.position or position

    def failed(self, failure: Failure, position: Position, by_gtid: bool = False) -> Position:
        """Act on a classified failure; the position to follow from next."""
        self.finish()  # the send in flight, if any: the position to resume from is acknowledged
        m.STREAM_ERRORS.labels(failure.kind).inc()
        self.watchdog.ping()
        resume_at = self.position or position
        if failure.action == RESUME_BY_GTID and not by_gtid:
            log.error("the server cannot serve %s (%s: %s); resuming from its GTID state %s",
                      resume_at, failure.kind, failure.message, resume_at.gtid)
            self.offset_refused = True
            return resume_at
        if failure.action in (FULL, RESUME_BY_GTID):
            reason = {"gtid_purged": "purged", "unknown_1236": "unknown"}.get(failure.kind, failure.kind)
            return self.full_invalidation(reason, f"the server cannot serve GTID state"
                                          f" {resume_at.gtid} ({failure.kind}: {failure.message})")
        self.failures += 1
        m.CONSECUTIVE_FAILURES.set(self.failures)
        m.RECONNECTS.labels("mysql").inc()
        delay = next(self.mysql_delays)
        log.warning("cannot follow the binlog (%s: %s); attempt %d failed, retrying from %s in %.1f s",
                    failure.kind, failure.message, self.failures, resume_at, delay)
        self.stop.wait(delay)
        return resume_at

    def stopped_before(self, event: UnsupportedEvent, log_file: str | None, position: Position) -> Position:
        """The stream met an event that may carry changes and that the worker cannot read.

        Nothing of its transaction, nor of a deferred group, is applied (they are dropped
        here, not flushed); the position stays at the last transaction Redis acknowledged
        before it.  Retrying from there meets the same event again, even once the server's
        settings are fixed: :meth:`unblock` is the way past it."""
        self.group = Group(None)
        self.blocked = event
        m.UNSUPPORTED_EVENTS.labels(event.name).inc()
        self.finish()  # complete transactions already sent before the event
        held = self.position or position
        log.error("STOPPED before binlog event %s (type %d) ending at %s:%d: %s. Nothing after %s is"
                  " applied; once the server's binlog settings pass the checks, every key is invalidated"
                  " and following resumes from then", event.name, event.code, log_file or held.log_file,
                  event.next_position, event.advice, held)
        return self.failed(Failure(RETRY, "unsupported_event", str(event)), held)

    def unblock(self) -> Position:
        """Past an event the worker cannot read: the server's settings are checked again
        (CheckFailed while they still write such events), then every owned key goes and the
        worker follows from the server's position now.  The unread transactions stay in the
        binlog before that position, so a retry from the saved one would only meet them again."""
        blocked = self.blocked
        assert blocked is not None
        self.mysql(recheck_binlog)
        if self.unblocked_at is not None and time.monotonic() - self.unblocked_at < UNBLOCK_SPACING_S:
            raise CheckFailed(f"{blocked.name} again within {UNBLOCK_SPACING_S:.0f} s of the last one although"
                              " the server's settings are right: a session (or a pooled connection opened"
                              " before the fix) still writes with the old setting; reconnect the"
                              " application's connections (RDS: reboot the instance)")
        position = self.full_invalidation("unsupported_event", f"the binlog holds {blocked.name} (type"
                                          f" {blocked.code}), which the worker cannot read")
        self.blocked = None
        self.unblocked_at = time.monotonic()
        return position

    def progressed(self) -> None:
        """Real progress (a transaction boundary applied, a heartbeat at the server's end):
        the backoff and the failure count start over."""
        if self.failures or self.offset_refused:
            self.failures = 0
            self.offset_refused = False
            m.CONSECUTIVE_FAILURES.set(0)
            self.mysql_delays.reset()

    # ----------------------------------------------------------------- loop

    def follow(self, stream: Any, plan: Plan) -> None:
        batch = self.new_batch()
        self.group = Group(stream)
        position = plan.position
        log_file = position.log_file
        source_id, source_uuid = plan.source.identity
        self.gtids = None if position.gtid is None else tracker(plan.source.flavor, position.gtid)
        gtids = self.gtids
        self.following(plan)
        counters = self.row_counters
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
                self.alive()
                if self.stop.is_set():
                    return
                self.leadership.check()
                continue
            received = time.time()
            if isinstance(event, RowsEvent):
                self.alive()
                table = decode.add_rows(batch, event, self.followed.rules, self.weights)
                m.ROW_EVENTS.labels(table, decode.operation(event)).inc()
            elif isinstance(event, XidEvent):
                gtid = gtids.commit() if gtids is not None else None
                batch = self.commit(batch, Position(log_file, event.packet.log_pos, source_id, gtid, source_uuid),
                                    event.timestamp, received)
                self.alive()
            elif isinstance(event, (MariadbGtidEvent, GtidEvent)):
                self.alive()
                if gtids is not None:
                    gtids.add(event.gtid)
            elif isinstance(event, QueryEvent):
                self.alive()
                batch = self.query(batch, event, log_file, received, (source_id, source_uuid))
            elif isinstance(event, RotateEvent):
                # The server's fake rotate (timestamp 0) names the file only; after a GTID
                # start its offset is 4, not where the stream starts.
                log_file = event.next_binlog
                if event.timestamp:
                    self.alive()
                    batch = self.flush(batch)  # a real rotate is only ever between transactions
                    gtid = gtids.state if gtids is not None else None
                    self.advance(Position(log_file, event.position, source_id, gtid, source_uuid))
            elif isinstance(event, HeartbeatLogEvent):  # the server is idle: nothing is open
                self.alive()
                batch = self.flush(batch)
                self.finish()
                m.SECONDS_BEHIND.set(0)
                self.progressed()
                self.save_if_due(0.0)
            if self.stop.is_set():
                return
            self.leadership.check()
            if self.replay_since is not None and not batch and self.group.position is None:
                self.replay()
        raise ConnectionError("the binlog stream ended")

    def claim(self, table_map: Any) -> bool:
        """Whether the connection reads this table's rows events itself (see packets.Filter):
        the images the configured mode needs can be read from the bytes."""
        rules = self.followed.rules.get(table_map.table)
        return rules is not None and decode.claims(table_map, rules.needed, self.settings.mode == "refresh")

    def following(self, plan: Plan) -> None:
        """Log and count which server is followed, and how the start was named."""
        m.RESUMES.labels("gtid" if plan.by_gtid else "position").inc()
        m.SOURCE_SERVER_ID.set(plan.source.server_id)
        if self.source_ident is not None and self.source_ident != plan.source.identity:
            m.SOURCE_CHANGES.inc()
            self.ring.clear()  # replay points of another server's binlog
        self.source_ident = plan.source.identity
        if plan.by_gtid:
            log.warning("following %s from GTID state %s (the position %s belongs to server_id %d)",
                        plan.source, plan.position.gtid, plan.position, plan.position.source_id)

    def alive(self) -> None:
        self.last_event = time.monotonic()
        m.LAST_EVENT_SECONDS.set(time.time())
        if not self.streaming:
            self.streaming = True
            m.STREAMING.set(1)
            log.info("following the binlog from %s (mode %s; row walk %s)", self.position, self.settings.mode,
                     fastrows.describe())
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
        if group.behind():  # more binlog is here already: decode it while Redis applies this
            earlier = self.collect()
            self.advanced_to = None  # this group carries a later position
            position, count, first_ts, first_received = group.take()
            sending = (batch, position, count, first_ts, first_received)
            future = self.sender.submit(self.applier.send_behind, batch, position,
                                        earlier[0] if earlier is not None else None)
            self.inflight = InFlight(future, [earlier[1], sending] if earlier is not None else [sending])
        else:
            self.finish()
            position, count, first_ts, first_received = group.take()
            self.applier.apply(batch, position)
            self.applied(batch, position, count, first_ts, first_received)
        return self.new_batch()

    def collect(self) -> tuple[Sent, Sending] | None:
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
            self.applier.receive(pending[0])
            self.applied(*pending[1])
        if self.advanced_to is not None:
            position, self.advanced_to = self.advanced_to, None
            if self.group.position is None:  # else a later group carries a later position
                self.advance(position)

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
            self.applier.drop(sent)

    def applied(self, batch: Batch, position: Position, count: int, first_ts: float, first_received: float) -> None:
        """Redis acknowledged the transactions up to ``position``."""
        if self.auditor is not None:
            self.auditor.changed(list(batch.ops), first_ts)
        done = time.time()
        self.position = self.saved = position
        self.saved_at = time.monotonic()
        self.note(position)
        m.TRANSACTIONS.inc(count)
        m.COMMIT_TO_APPLIED_SECONDS.observe(max(0.0, done - first_ts))
        m.RECEIVED_TO_APPLIED_SECONDS.observe(done - first_received)
        m.SECONDS_BEHIND.set(max(0.0, done - first_ts))
        self.show(position)
        self.progressed()

    def query(self, batch: Batch, event: QueryEvent, log_file: str, received: float,
              source: tuple[int, str]) -> Batch:
        text = event.query.strip() if isinstance(event.query, str) else event.query.decode(errors="replace")
        upper = text.upper()
        if upper.startswith(NOT_A_BOUNDARY):
            return batch
        gtid = self.gtids.commit() if self.gtids is not None else None
        position = Position(log_file, event.packet.log_pos, source[0], gtid, source[1])
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
                self.finish()
                self.reload_catalog()
                return batch
        return self.commit(batch, position, event.timestamp, received)

    def reload_catalog(self) -> None:
        """After DDL on a followed table its columns may differ: resolve the declaration again.
        If it no longer fits the table, say so and stop refreshing (deletes stay right)."""
        try:
            catalog = self.mysql(self.load_catalog)
        except CheckFailed as exc:
            log.error("after DDL the declaration no longer fits the database: %s; deleting instead of"
                      " refreshing until it does", exc)
            self.refresh = False
            return
        self.followed = Followed(catalog, self.keyspace)
        self.refresh = self.settings.mode == "refresh"

    def start_auditor(self) -> Auditor | None:
        s = self.settings
        if not s.audit:
            log.info("consistency auditor off (AUDIT=false)")
            return None
        log.info("consistency auditor on: %.0f%% of transactions checked again after %.1f s, %g keys/s sampled,"
                 " at most %g queries/s", 100 * s.audit_invalidation_share, s.audit_delay_s,
                 s.audit_sample_keys_per_s, s.audit_db_queries_per_s)
        return Auditor(catalog=lambda: self.followed.catalog, keyspace=self.keyspace, client=build_redis(s),
                       connect=lambda: control_connection(s), applied=lambda: self.position,
                       delay_s=s.audit_delay_s, sample_keys_per_s=s.audit_sample_keys_per_s,
                       db_queries_per_s=s.audit_db_queries_per_s,
                       invalidation_share=s.audit_invalidation_share).start()

    def checked_catalog(self, conn: pymysql.connections.Connection) -> Catalog:
        run_checks(conn, self.settings, declaration.load(self.settings.config_path).tables)
        return self.load_catalog(conn)

    def load_catalog(self, conn: pymysql.connections.Connection) -> Catalog:
        return load_catalog(conn, str(self.settings.config_path), self.settings.mysql.database,
                            refresh=self.settings.mode == "refresh")

    def advance(self, position: Position) -> None:
        """Move past work that touched nothing cached; persisted lazily."""
        if self.group.position is not None:  # a deferred group waits: it carries the position
            self.group.position = position
            return
        if self.inflight is not None and self.inflight.settled():
            self.finish()
        if self.inflight is not None:  # taken up once the send in flight is acknowledged
            self.advanced_to = position
            return
        self.position = position
        self.progressed()
        # caught up, at once: a read waiting for this transaction's GTID (Cachetail-Min-GTID)
        # learns it is applied; behind, at most every IDLE_SAVE_S
        self.save_if_due(IDLE_SAVE_S if self.group.behind() else 0.0)

    def save_if_due(self, min_age_s: float) -> None:
        if self.position is None or self.position == self.saved:
            return
        if time.monotonic() - self.saved_at < min_age_s:
            return
        self.applier.save(self.position)
        self.saved = self.position
        self.saved_at = time.monotonic()
        self.note(self.position)
        self.show(self.position)

    def new_batch(self) -> Batch:
        """Refresh mode writes row images; while a replay re-applies old transactions it only
        deletes, so an old image never overwrites a newer one, not even for a moment."""
        return Batch(self.refresh and self.replay_until is None)

    # ----------------------------------------------------------------- replay

    def note(self, position: Position) -> None:
        """Remember that everything up to ``position`` is acknowledged as of now."""
        now = time.monotonic()
        if self.replay_until is not None and reached(position, self.replay_until):
            log.warning("replay done: back at %s", self.replay_until)
            self.replay_until = None
        ring = self.ring
        if not ring or now - ring[-1][0] >= RING_STEP_S:
            ring.append((now, position))
        while len(ring) > 1 and ring[1][0] < now - self.settings.replay_window_s:
            ring.popleft()

    def request_replay(self, since: float | None, reason: str) -> None:
        """From the failover watch's thread: the worker replays at its next event boundary."""
        self.replay_reason = reason
        self.replay_since = (since,)

    def replay(self) -> None:
        self.finish()
        (since,), self.replay_since = self.replay_since or (None,), None
        start = None
        if since is not None:
            for at, position in self.ring:
                if at > since:
                    break
                start = position
        if start is None:
            raise Replay(self.full_invalidation(
                "failover_window", "the replaced Redis primary was not seen in sync within the"
                " replay window"))
        if self.position is not None and (self.replay_until is None
                                          or not reached(self.replay_until, self.position)):
            self.replay_until = self.position
        m.REPLAYS.labels(self.replay_reason).inc()
        log.error("REPLAY (%s): re-applying the binlog from %s to %s, deletes only",
                  self.replay_reason, start, self.replay_until)
        self.position = start
        raise Replay(start)

    def show(self, position: Position) -> None:
        m.POSITION.set(position.log_pos)
        m.POSITION_FILE_INDEX.set(position.file_index)

    # ------------------------------------------------------- full invalidation

    def full_invalidation(self, reason: str, why: str) -> Position:
        """Every owned key goes; then follow from the server's current position."""
        self.finish()
        log.error("FULL INVALIDATION (%s): %s; deleting every key under %r and following from now",
                  reason, why, self.keyspace.owned_pattern())
        position = self.mysql(current_position)  # first: changes after it are replayed
        self.offset_refused = False
        cleared = self.applier.clear_owned(position)
        self.applier.save(position)
        self.position = self.saved = position
        self.saved_at = time.monotonic()
        self.show(position)
        m.FULL_INVALIDATIONS.labels(reason).inc()
        log.error("FULL INVALIDATION (%s) done: %d keys deleted; following from %s", reason, cleared, position)
        return position

    # ------------------------------------------------------------- helpers

    def mysql(self, action: Callable[[pymysql.connections.Connection], T]) -> T:
        """Run ``action`` on a fresh control connection, retrying connection failures
        (each one counts as a failed attempt to follow)."""
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
                log.warning("MySQL unavailable (%s); attempt %d failed, retrying", exc, self.failures + 1)
            self.failures += 1
            m.CONSECUTIVE_FAILURES.set(self.failures)
            m.STREAM_ERRORS.labels("connection").inc()
            m.RECONNECTS.labels("mysql").inc()
            self.watchdog.ping()
            if self.stop.wait(next(self.mysql_delays)):
                raise Stopped

    def health(self) -> dict[str, Any]:
        """Leader: healthy while streaming, Redis answering, events recent.
        Standby: healthy while it reaches Redis (and so can take over)."""
        age = time.monotonic() - self.last_event if self.last_event else None
        leadership = getattr(self, "leadership", None)
        state = leadership.state() if leadership is not None else {"role": "starting", "leader": None}
        redis_ok = getattr(self, "applier", None) is not None and self.applier.redis_ok
        lag = self.lag.lag_s() if self.lag is not None else None
        if state["role"] == "leader":
            healthy = (self.streaming and redis_ok and age is not None and age < self.settings.stale_after_s
                       and self.failures < FAILURES_UNHEALTHY
                       and (lag is None or lag < self.settings.stale_after_s))
        else:
            redis_ok = leadership is not None and leadership.redis_ok
            healthy = redis_ok
        return {"healthy": healthy, **state, "streaming": self.streaming, "redis_ok": redis_ok,
                "last_event_age_s": None if age is None else round(age, 3),
                "follow_lag_s": None if lag is None else round(lag, 3),
                "consecutive_failures": self.failures,
                "position": None if self.position is None else str(self.position),
                "mode": self.settings.mode, "audit": self.settings.audit}
