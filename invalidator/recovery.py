"""What the leader does when following fails: retry, resume by GTID, or invalidate everything.

:meth:`Recovery.failed` acts on a classified failure (see :mod:`invalidator.errors`) and
names the position to follow from next; :meth:`Recovery.full_invalidation` deletes every
owned key and follows from the server's position now; an event the worker cannot read
stops it before that event until the server's settings are fixed (:meth:`Recovery.unblock`).
Every MySQL control query goes through :meth:`Recovery.mysql`, which counts and retries
connection failures.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import pymysql

from cachetail.backoff import Backoff
from metrics import invalidator as m

from invalidator.applier import Applier, Stopped
from invalidator.checks import CheckFailed, recheck_binlog
from invalidator.errors import FULL, RESUME_BY_GTID, RETRY, Failure, is_connection_error
from invalidator.position import Position
from invalidator.progress import Progress
from invalidator.sending import Sender
from invalidator.service import Watchdog
from invalidator.settings import InvalidatorSettings
from invalidator.source import current_position
from invalidator.stream import control_connection
from invalidator.unsupported import UnsupportedEvent

log = logging.getLogger("invalidator")
T = TypeVar("T")
# at most one full invalidation this often past events it cannot read (a session still
# compressing after the global fix would otherwise empty the cache at every transaction)
UNBLOCK_SPACING_S = 60.0


class Recovery:
    """The leader's answers to failures, and its MySQL control queries (see the module docstring)."""

    def __init__(self, settings: InvalidatorSettings, stop: threading.Event, watchdog: Watchdog,
                 applier: Applier, sender: Sender, progress: Progress) -> None:
        self.settings = settings
        self.stop = stop
        self.watchdog = watchdog
        self.applier = applier
        self.sender = sender
        self.progress = progress
        self.delays = Backoff(0.1, settings.retry_max_s)
        self.failures = 0  # failed attempts to follow since the last real progress
        self.offset_refused = False  # the server refused the position's file and offset
        self.blocked: UnsupportedEvent | None = None  # stopped before it; see unblock
        self.unblocked_at: float | None = None  # monotonic time of the last unblock
        self.checked: set[tuple[int, str]] = set()  # servers whose binlog settings were checked

    def progressed(self) -> None:
        """Real progress (a transaction boundary applied, a heartbeat at the server's end):
        the backoff and the failure count start over."""
        if self.failures or self.offset_refused:
            self.failures = 0
            self.offset_refused = False
            m.CONSECUTIVE_FAILURES.set(0)
            self.delays.reset()

    def failed(self, failure: Failure, position: Position, by_gtid: bool = False) -> Position:
        """Act on a classified failure; the position to follow from next."""
        self.sender.finish()  # the send in flight, if any: the position to resume from is acknowledged
        m.STREAM_ERRORS.labels(failure.kind).inc()
        self.watchdog.ping()
        resume_at = self.progress.position or position
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
        delay = next(self.delays)
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
        self.sender.drop_group()
        self.blocked = event
        m.UNSUPPORTED_EVENTS.labels(event.name).inc()
        self.sender.finish()  # complete transactions already sent before the event
        held = self.progress.position or position
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

    def full_invalidation(self, reason: str, why: str) -> Position:
        """Every owned key goes; then follow from the server's current position."""
        self.sender.finish()
        log.error("FULL INVALIDATION (%s): %s; deleting every key under %r and following from now",
                  reason, why, self.settings.keyspace.owned_pattern())
        position = self.mysql(current_position)  # first: changes after it are replayed
        self.offset_refused = False
        cleared = self.applier.clear_owned(position)
        self.applier.save(position)
        self.progress.persisted(position)
        m.FULL_INVALIDATIONS.labels(reason).inc()
        log.error("FULL INVALIDATION (%s) done: %d keys deleted; following from %s", reason, cleared, position)
        return position

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
            if self.stop.wait(next(self.delays)):
                raise Stopped
