"""What both near-cache trackers share: the loop that keeps invalidations flowing.

A tracker establishes tracking (one connection, :mod:`api.tracking`, or one per
primary, :mod:`api.clustertracking`), enables the near-cache, watches until
something is lost, and then establishes it again with backoff; a lost
invalidation connection empties and bypasses the near-cache at once.  The
subclasses say only how tracking is established and watched.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from api.lean import pack
from api.nearcache import NearCache
from cachetail.backoff import Backoff

log = logging.getLogger("api")

HEARTBEAT_S = 0.1
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 2.0
STABLE_S = 10.0  # a connection that lived this long resets the backoff
_LOG_EVERY_S = 10.0
_INVALIDATE = b"invalidate"

Tracked = TypeVar("Tracked")


def apply_push(near: NearCache, push: list[Any]) -> None:
    """An invalidation message: these keys changed, or (a null) every key may have."""
    if push[0] != _INVALIDATE:
        return
    keys = push[1]
    if keys is None:
        near.flush()
    else:
        near.invalidate(keys)


class LogEvery:
    """A flapping connection must not flood the log: one line per interval."""

    def __init__(self, logger: logging.Logger, interval_s: float = _LOG_EVERY_S) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._logged_at = float("-inf")

    def warning(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._logged_at >= self._interval_s:
            self._logged_at = now
            self._logger.warning(message, *args)


def tracking_command(prefixes: str | Sequence[str]) -> bytes:
    """CLIENT TRACKING on BCAST with one PREFIX per near-cached entity."""
    names = [prefixes] if isinstance(prefixes, str) else list(prefixes)
    return pack("CLIENT", "TRACKING", "on", "BCAST", *(a for p in names for a in ("PREFIX", p)))


class TrackerBase(ABC, Generic[Tracked]):
    """Establish, watch until lost, establish again with backoff; ``Tracked`` is what
    establishing yields and watching watches (a connection, a topology)."""

    # what "cannot establish ..." names in the log, and the errors that mean "retry"
    _establishing = "tracking"
    _retried: tuple[type[Exception], ...] = (RedisError, OSError)

    def __init__(self, prefix: str | Sequence[str], near: NearCache, *, heartbeat_s: float,
                 name: str) -> None:
        self.prefix = prefix
        self._near = near
        self._heartbeat_s = heartbeat_s
        self._name = name
        self._tracking = tracking_command(prefix)
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._log = LogEvery(log)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._close_connections()
        self._near.close()

    @abstractmethod
    async def sync(self) -> None:
        """Return once every invalidation Redis sent before now has been applied."""

    @abstractmethod
    async def _establish(self) -> Tracked:
        """Tracking on, the near-cache enabled; raises one of ``_retried`` if not."""

    @abstractmethod
    async def _watch(self, tracked: Tracked) -> None:
        """Return once tracking is lost (the near-cache is then disabled)."""

    @abstractmethod
    def _close_connections(self) -> None: ...

    async def _run(self) -> None:
        backoff = Backoff(RETRY_FIRST_S, RETRY_MAX_S)
        while True:
            try:
                tracked = await self._establish()
            except self._retried as exc:
                self._log.warning("near-cache bypassed: cannot establish %s (%s: %s); retrying",
                                  self._establishing, type(exc).__name__, exc)
            else:
                started = time.monotonic()
                await self._watch(tracked)
                if time.monotonic() - started >= STABLE_S:
                    backoff.reset()
            # never a tight loop, even when the server drops us as soon as we are in
            await backoff.sleep()

    def _on_push(self, push: list[Any]) -> None:
        apply_push(self._near, push)

    def _lost(self, error: BaseException, connection: str) -> None:
        """An invalidation connection (``connection`` names it in the log) was lost."""
        if self._near.live:
            reason = "heartbeat" if isinstance(error, RedisTimeoutError) else "disconnected"
            self._near.disable(reason)
            self._log.warning("near-cache emptied and bypassed: %s %s (%s); reconnecting",
                              connection, "timed out" if reason == "heartbeat" else "lost", error)
