"""Where the leader is: the position Redis acknowledged, the one saved, and the replay ring.

The ring keeps (time, position) pairs: everything up to the position was acknowledged
by then.  A Redis failover (see :mod:`invalidator.topology`) asks for a replay from the
last point before the new primary may have missed writes; refresh stays off until the
replay passes the position the worker had reached.
"""

from __future__ import annotations

import logging
import time
from collections import deque

from metrics import invalidator as m

from invalidator.lag import reached
from invalidator.position import Position
from invalidator.resume import Plan

log = logging.getLogger("invalidator")
RING_STEP_S = 0.1  # replay points are kept at most this often: an earlier point is always safe


class Progress:
    """The positions of the leader: acknowledged, saved, and the points a replay may start from."""

    def __init__(self, replay_window_s: float) -> None:
        self.position: Position | None = None  # applied (acknowledged) up to here
        self.saved: Position | None = None  # persisted up to here
        self.saved_at = 0.0  # monotonic
        self.replay_window_s = replay_window_s
        # (monotonic time, position): every change up to the position was acknowledged by then
        self.ring: deque[tuple[float, Position]] = deque()
        self.replay_since: tuple[float | None] | None = None  # set by the failover watch
        self.replay_until: Position | None = None  # refresh is off until the replay passes this
        self.replay_reason = "failover"
        self.source_ident: tuple[int, str] | None = None  # the server followed last

    def restart(self) -> None:
        """Leading begins: the shared saved position decides."""
        self.position = self.saved = None
        self.ring.clear()
        self.replay_since = self.replay_until = None

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

    def persisted(self, position: Position) -> None:
        """``position`` is applied and saved."""
        self.position = self.saved = position
        self.saved_at = time.monotonic()
        show(position)

    def note(self, position: Position) -> None:
        """Remember that everything up to ``position`` is acknowledged as of now."""
        now = time.monotonic()
        if self.replay_until is not None and reached(position, self.replay_until):
            log.warning("replay done: back at %s", self.replay_until)
            self.replay_until = None
        ring = self.ring
        if not ring or now - ring[-1][0] >= RING_STEP_S:
            ring.append((now, position))
        while len(ring) > 1 and ring[1][0] < now - self.replay_window_s:
            ring.popleft()

    def request_replay(self, since: float | None, reason: str) -> None:
        """From the failover watch's thread: the worker replays at its next event boundary."""
        self.replay_reason = reason
        self.replay_since = (since,)

    def replay_start(self) -> Position | None:
        """Where a requested replay starts (None: outside the window); refresh stays off
        until the replay is back where the worker was."""
        (since,), self.replay_since = self.replay_since or (None,), None
        start = None
        if since is not None:
            for at, position in self.ring:
                if at > since:
                    break
                start = position
        if start is None:
            return None
        if self.position is not None and (self.replay_until is None
                                          or not reached(self.replay_until, self.position)):
            self.replay_until = self.position
        m.REPLAYS.labels(self.replay_reason).inc()
        log.error("REPLAY (%s): re-applying the binlog from %s to %s, deletes only",
                  self.replay_reason, start, self.replay_until)
        self.position = start
        return start


def show(position: Position) -> None:
    m.POSITION.set(position.log_pos)
    m.POSITION_FILE_INDEX.set(position.file_index)
