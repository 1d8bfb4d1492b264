"""How long since the worker last held everything the MySQL server had written.

The event-time gauges say how old the newest *received* event is; they cannot
see a worker that receives nothing useful: one that reconnects to a promoted
replica in a loop, or follows a server the application no longer writes to.
This watch asks the server itself, once a second on a connection of its own,
where its binlog ends (``@@gtid_binlog_pos`` / ``@@gtid_executed`` and SHOW
MASTER STATUS), and compares it with what the worker has applied:

``cachetail_invalidator_follow_lag_seconds`` = now - the newest moment at which
the server's binlog end was at or before the worker's applied position.  It is 0
(up to the poll interval) while the worker keeps up, and grows while the
server's position moves on without the worker.  A server that cannot be asked
does not move it; ``consecutive_failures`` counts that case.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

import pymysql

from metrics import invalidator as m

from invalidator.daemon import Daemon
from invalidator.gtid import MARIADB, MYSQL, GtidError, covers
from invalidator.position import Position
from invalidator.source import position_status

log = logging.getLogger("invalidator")
MAX_POLLS = 3600


def reached(applied: Position, target: Position) -> bool:
    """True when ``applied`` is at or past ``target`` in the database's history."""
    if applied.gtid is not None and target.gtid is not None:
        flavor = MYSQL if ":" in applied.gtid + target.gtid else MARIADB
        try:
            return covers(flavor, applied.gtid, target.gtid)
        except (GtidError, ValueError):
            return False
    if applied.source == target.source:
        return (applied.file_index, applied.log_pos) >= (target.file_index, target.log_pos)
    return False


class FollowLag(Daemon):
    """A daemon thread polling the server's binlog end; ``lag_s()`` is safe from any thread."""

    def __init__(self, connect: Callable[[], pymysql.connections.Connection],
                 applied: Callable[[], Position | None], interval_s: float = 1.0) -> None:
        super().__init__("follow-lag")
        self.connect = connect
        self.applied = applied
        self.interval_s = interval_s
        self.polls: deque[tuple[float, Position]] = deque(maxlen=MAX_POLLS)  # not yet reached
        self.caught_up_at = time.monotonic()

    def close(self) -> None:
        super().close()
        m.FOLLOW_LAG_SECONDS.set(0)

    def lag_s(self) -> float:
        return 0.0 if not self.polls else max(0.0, time.monotonic() - self.caught_up_at)

    def run(self) -> None:
        conn = None
        while not self.stopped.is_set():
            started = time.monotonic()
            try:
                conn = conn or self.connect()
                _, server = position_status(conn)
                self.observe(started, server)
            except Exception as exc:  # noqa: BLE001 - a watch never dies; the worker counts failures
                log.debug("follow-lag poll failed: %s", exc)
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:  # noqa: BLE001 - closing a connection that already failed: its error adds nothing
                        pass
                conn = None
                self.observe(started, None)
            self.stopped.wait(max(0.0, self.interval_s - (time.monotonic() - started)))
        if conn is not None:
            conn.close()

    def observe(self, at: float, server: Position | None) -> None:
        """One poll: the server was at ``server`` at monotonic time ``at`` (None: unknown)."""
        if server is not None:
            self.polls.append((at, server))
        applied = self.applied()
        while self.polls and applied is not None and reached(applied, self.polls[0][1]):
            self.caught_up_at = self.polls.popleft()[0]
        if not self.polls:
            self.caught_up_at = at if server is not None else self.caught_up_at
        m.FOLLOW_LAG_SECONDS.set(round(self.lag_s(), 3))
