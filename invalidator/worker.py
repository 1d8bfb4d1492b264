"""The invalidator's top: lead or stand by; while leading, follow the binlog.

At-least-once: a transaction's keys and the position after it go to Redis in
one fenced script at its XID (on a cluster: the keys slot by slot, then the
position); the position is never saved inside a transaction and never ahead
of what Redis acknowledged.  A restart, a reconnect or a takeover by a
standby resumes from the last such position and may re-apply work (deletes
are idempotent).  A Redis failover or restart makes the worker replay the
window whose writes the new primary may not have (see topology.py).

The parts: :class:`~invalidator.follow.Follower` reads one stream (a row's path is in
its module docstring), :class:`~invalidator.sending.Sender` applies committed
transactions, :class:`~invalidator.progress.Progress` holds the positions,
:class:`~invalidator.recovery.Recovery` decides what a failure leads to.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pymysql
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cachetail import config as declaration
from cachetail.keyspace import prepare_slot_tags
from cachetail.schema import Catalog
from metrics import invalidator as m

from invalidator.applier import REDIS_ERRORS, Applier, Stopped
from invalidator.audit import Auditor
from invalidator.catalog import Followed, Weights
from invalidator.checks import CheckFailed, run_checks
from invalidator.errors import RETRY, Failure, classify
from invalidator.follow import Follower, Replay, declared_catalog
from invalidator.health import Status, health
from invalidator.lag import FollowLag
from invalidator.leader import Leadership, LostLeadership
from invalidator.position import Position, make_store
from invalidator.progress import Progress
from invalidator.recovery import Recovery
from invalidator.resume import FullInvalidationNeeded, plan_resume
from invalidator.sending import Sender, Writer
from invalidator.service import Watchdog, sd_notify, start_http
from invalidator.settings import InvalidatorSettings
from invalidator.stream import control_connection, open_stream
from invalidator.topology import FailoverWatch
from invalidator.unsupported import UnsupportedEvent

log = logging.getLogger("invalidator")


def build_redis(s: InvalidatorSettings) -> redis.Redis | redis.RedisCluster:
    # No retries inside redis-py (its default backs off for up to ~15 s): the
    # Applier retries itself, watching for stop requests and pinging the watchdog.
    kwargs: dict[str, Any] = {**s.redis.client_kwargs(), "ssl": s.redis.tls,
              "socket_timeout": max(s.redis.socket_timeout_s, 1.0)}
    if s.redis.cluster:
        return redis.RedisCluster(**kwargs, retry=Retry(NoBackoff(), 1))
    return redis.Redis(**kwargs, retry=Retry(NoBackoff(), 0))


class Worker:
    """One invalidator process: the leader's parts, built once; leads while it holds the lease."""

    def __init__(self, settings: InvalidatorSettings, stop: threading.Event | None = None,
                 serve_http: bool = True) -> None:
        s = self.settings = settings
        self.stop = stop or threading.Event()
        self.serve_http = serve_http
        self.keyspace = settings.keyspace
        self.watchdog = Watchdog()
        self.status = Status()
        self.client = build_redis(s)
        # the lease is renewed from a thread of its own, on a client of its own
        self.leadership = Leadership(build_redis(s), self.keyspace, s.identity, s.lease_s, REDIS_ERRORS)
        self.applier = Applier(self.client, self.keyspace,
                               make_store(s.position_store, self.client, self.keyspace, s.state_dir),
                               self.stop, s.retry_max_s, self.leadership, on_wait=self.watchdog.ping,
                               watermark_slots_max=s.watermark_slots_max)
        self.progress = Progress(s.replay_window_s)
        self.sender = Sender(Writer(self.applier), self.applied, self.advanced)
        self.recovery = Recovery(s, self.stop, self.watchdog, self.applier, self.sender, self.progress)
        self.follower: Follower | None = None  # once the catalog is loaded (run)
        self.lag: FollowLag | None = None

    @property
    def position(self) -> Position | None:
        """Applied (acknowledged) up to here."""
        return self.progress.position

    @property
    def streaming(self) -> bool:
        return self.status.streaming

    def applied(self, *sending: Any) -> None:
        assert self.follower is not None
        self.follower.applied(*sending)

    def advanced(self, position: Position) -> None:
        assert self.follower is not None
        self.follower.advanced(position)

    def run(self) -> int:
        """Lead or stand by until stopped; 0 on a stop request.  Raises CheckFailed on bad configuration."""
        prepare_slot_tags()  # watermark and fence keys name slots: built here, not in a batch
        http = start_http(self.settings.metrics_host, self.settings.metrics_port,
                          self.health) if self.serve_http else None
        try:
            catalog = self.recovery.mysql(self.checked_catalog)
            self.follower = Follower(self.settings, self.stop, self.status, self.watchdog, self.leadership,
                                     self.applier, self.sender, self.progress, self.recovery,
                                     Followed(catalog, self.keyspace),
                                     Weights(lambda: control_connection(self.settings)))
            while not self.stop.is_set():
                self.stand_by()
                if not self.stop.is_set():
                    self.lead()
        except Stopped:
            pass
        finally:
            self.sender.close()
            sd_notify("STOPPING=1")
            m.STREAMING.set(0)
            if http:
                http.shutdown()
                http.server_close()
            self.leadership.step_down(release=True)
            self.leadership.client.close()
            self.client.close()
        log.info("stopped at %s", self.progress.position)
        return 0

    def stand_by(self) -> None:
        """Wait for the leader lease (at once when nobody holds it)."""
        if not self.status.ready:
            self.status.ready = True
            sd_notify("READY=1\nSTATUS=waiting for the leader lease")
        self.leadership.wait(self.stop, on_poll=self.watchdog.ping)

    def lead(self) -> None:
        """Follow the binlog from the shared position until stopped or the lease is lost."""
        follower = self.follower
        assert follower is not None
        watch = None
        try:
            self.progress.restart()
            self.recovery.blocked = None  # the shared saved position decides; the event is met again if there
            watch = FailoverWatch(self.settings.redis, self.progress.request_replay).start()
            self.lag = FollowLag(lambda: control_connection(self.settings), lambda: self.progress.position).start()
            follower.auditor = self.start_auditor()
            position = self.initial_position()
            self.progress.note(position)
            sd_notify("STATUS=leader: following the binlog")
            while not self.stop.is_set():
                position = self.follow_from(follower, position)
        except LostLeadership as exc:
            log.error("%s; standing by (the new leader resumes from the saved position)", exc)
            sd_notify("STATUS=standby: another invalidator leads")
        finally:
            self.sender.abandon()
            if watch is not None:
                watch.close()
            if self.lag is not None:
                self.lag.close()
                self.lag = None
            if follower.auditor is not None:
                follower.auditor.close()
                follower.auditor = None
            self.status.streaming = False
            m.STREAMING.set(0)
            self.leadership.step_down(release=self.stop.is_set())

    def initial_position(self) -> Position:
        """The shared saved position (a standby taking over finds its predecessor's)."""
        saved = self.applier.load()
        if saved is None:
            return self.recovery.full_invalidation("no_position", "no saved position")
        log.info("resuming from %s (server_id %d, GTID %s)", saved, saved.source_id, saved.gtid)
        self.progress.position = self.progress.saved = saved
        # every slot (one node: the node) without a watermark gets one at this state: a fill
        # from a replica reads the primary for a slot without one (a full invalidation marks
        # every watermark itself)
        state = (saved.gtid or "").encode()
        self.applier.retry("marking watermarks", lambda: self.applier.mark_all(state, only_missing=True))
        return saved

    def follow_from(self, follower: Follower, position: Position) -> Position:
        """Stream from ``position`` until stopped or the connection fails; the position to resume."""
        recovery = self.recovery
        stream = None
        by_gtid = False
        try:
            if recovery.blocked is not None:
                return recovery.unblock()
            plan = recovery.mysql(lambda conn: plan_resume(conn, position, recovery.offset_refused, recovery.checked))
            by_gtid = plan.by_gtid
            stream = open_stream(self.settings, plan.position, plan.source, by_gtid,
                                 tables=follower.followed.catalog.tables, claim=follower.claim)
            follower.follow(stream, plan)
            self.sender.finish()
        except Replay as replay:
            return replay.position
        except FullInvalidationNeeded as exc:
            return recovery.full_invalidation(exc.reason, str(exc))
        except UnsupportedEvent as exc:
            return recovery.stopped_before(exc, stream.log_file if stream is not None else None, position)
        except CheckFailed as exc:  # a server that cannot be followed (now): say so, keep trying
            return recovery.failed(Failure(RETRY, "config", str(exc).replace("\n", "; ")), position)
        except (Stopped, LostLeadership):
            raise
        except Exception as exc:  # noqa: BLE001 - classified: retry, resume by GTID, or invalidate
            failure = classify(exc)
            if failure.kind == "unexpected":
                log.exception("binlog stream failed")
            return recovery.failed(failure, position, by_gtid)
        finally:
            self.status.streaming = False
            m.STREAMING.set(0)
            if stream is not None:
                try:
                    stream.close()
                except Exception:  # noqa: BLE001 - the stream is done with either way
                    pass
        return self.progress.position or position

    def start_auditor(self) -> Auditor | None:
        s = self.settings
        if not s.audit:
            log.info("consistency auditor off (AUDIT=false)")
            return None
        log.info("consistency auditor on: %.0f%% of transactions checked again after %.1f s, %g keys/s sampled,"
                 " at most %g queries/s", 100 * s.audit_invalidation_share, s.audit_delay_s,
                 s.audit_sample_keys_per_s, s.audit_db_queries_per_s)
        follower = self.follower
        assert follower is not None
        return Auditor(catalog=lambda: follower.followed.catalog, keyspace=self.keyspace, client=build_redis(s),
                       connect=lambda: control_connection(s), applied=lambda: self.progress.position,
                       delay_s=s.audit_delay_s, sample_keys_per_s=s.audit_sample_keys_per_s,
                       db_queries_per_s=s.audit_db_queries_per_s,
                       invalidation_share=s.audit_invalidation_share).start()

    def checked_catalog(self, conn: pymysql.connections.Connection) -> Catalog:
        run_checks(conn, self.settings, declaration.load(self.settings.config_path).tables)
        return declared_catalog(self.settings, conn)

    def health(self) -> dict[str, Any]:
        return health(self.settings, self.status, self.leadership, self.applier, self.recovery,
                      self.progress, self.lag)
