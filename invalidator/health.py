"""What ``/health`` and ``invalidator --check`` are told: the worker's liveness and role."""

from __future__ import annotations

import time
from typing import Any

from invalidator.applier import Applier
from invalidator.lag import FollowLag
from invalidator.leader import Leadership
from invalidator.progress import Progress
from invalidator.recovery import Recovery
from invalidator.settings import InvalidatorSettings

FAILURES_UNHEALTHY = 3  # consecutive failed attempts to follow: --check fails


class Status:
    """Whether the leader streams, and when it last heard from the server."""

    def __init__(self) -> None:
        self.streaming = False
        self.ready = False  # systemd was told READY=1
        self.last_event = 0.0  # monotonic


def health(settings: InvalidatorSettings, status: Status, leadership: Leadership, applier: Applier,
           recovery: Recovery, progress: Progress, lag: FollowLag | None) -> dict[str, Any]:
    """Leader: healthy while streaming, Redis answering, events recent.
    Standby: healthy while it reaches Redis (and so can take over)."""
    age = time.monotonic() - status.last_event if status.last_event else None
    state = leadership.state()
    lag_s = lag.lag_s() if lag is not None else None
    if state["role"] == "leader":
        redis_ok = applier.redis_ok
        healthy = (status.streaming and redis_ok and age is not None and age < settings.stale_after_s
                   and recovery.failures < FAILURES_UNHEALTHY
                   and (lag_s is None or lag_s < settings.stale_after_s))
    else:
        redis_ok = healthy = leadership.redis_ok
    return {"healthy": healthy, **state, "streaming": status.streaming, "redis_ok": redis_ok,
            "last_event_age_s": None if age is None else round(age, 3),
            "follow_lag_s": None if lag_s is None else round(lag_s, 3),
            "consecutive_failures": recovery.failures,
            "position": None if progress.position is None else str(progress.position),
            "mode": settings.mode, "audit": settings.audit}
