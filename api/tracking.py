"""The worker's invalidation connection: what keeps its near-cache true.

One RESP3 connection per worker runs ``CLIENT TRACKING on BCAST PREFIX
<prefix>:{u:``: from then on Redis pushes the name of every key under that
prefix that changes, whoever changed it and whichever connection read it, and
a null for FLUSHALL/FLUSHDB.  BCAST rather than the default mode (docs/protocol.md,
"The near-cache"): Redis keeps no per-key state for us, and the promise rests
on this one connection alone — reads may use any connection.

The near-cache is live only while this connection is up and answers: a loss
(server restart, CLIENT KILL, network) empties and bypasses it at once, from
the socket's close; a PING every ``heartbeat_s`` that is not answered within
REDIS_TIMEOUT_S ends the connection the same way, so a silent network
partition cannot leave a worker serving entries whose invalidations are lost.
Then it reconnects with backoff and enables the near-cache again once Redis
has acknowledged the tracking command.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from api.lean import RespConnection, open_connection, pack
from api.nearcache import NearCache
from cachetail.backoff import Backoff
from cachetail.settings import RedisSettings

log = logging.getLogger("api")

HEARTBEAT_S = 0.1
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 2.0
STABLE_S = 10.0  # a connection that lived this long resets the backoff
_LOG_EVERY_S = 10.0
_PING = pack("PING")
_INVALIDATE = b"invalidate"


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


class Tracker:
    def __init__(self, settings: RedisSettings, prefix: str | Sequence[str], near: NearCache, *,
                 heartbeat_s: float = HEARTBEAT_S, name: str = "cachetail-api-tracking") -> None:
        self.prefix = prefix
        self._settings = settings
        self._near = near
        self._heartbeat_s = heartbeat_s
        self._name = name
        self._tracking = tracking_command(prefix)
        self._conn: RespConnection | None = None
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
        if self._conn is not None:
            self._conn.close()
        self._near.close()

    async def sync(self) -> None:
        """Return once every invalidation Redis sent before now has been applied: a PING
        round trip on the invalidation connection (replies and pushes keep their order)."""
        conn = self._conn
        if conn is None or not conn.is_open:
            return  # not tracking: the near-cache is empty and bypassed
        try:
            await conn.call(_PING)
        except RedisError:
            pass  # the loss has emptied and disabled the near-cache

    async def _run(self) -> None:
        backoff = Backoff(RETRY_FIRST_S, RETRY_MAX_S)
        while True:
            try:
                conn = await open_connection(
                    self._settings, name=self._name, resp3=True, on_push=self._on_push,
                    on_lost=self._on_lost, setup=(self._tracking,))
            except (RedisError, OSError) as exc:
                self._log.warning("near-cache bypassed: cannot establish tracking (%s: %s); retrying",
                          type(exc).__name__, exc)
            else:
                self._conn = conn
                self._near.enable()
                log.info("near-cache on: Redis tracks %r for this worker (BCAST)", self.prefix)
                started = time.monotonic()
                try:
                    await self._heartbeat(conn)
                finally:
                    conn.close()
                    self._conn = None
                if time.monotonic() - started >= STABLE_S:
                    backoff.reset()
            # never a tight loop, even when the server drops us as soon as we are in
            await backoff.sleep()

    async def _heartbeat(self, conn: RespConnection) -> None:
        while True:
            await asyncio.wait({conn.closed}, timeout=self._heartbeat_s)
            if not conn.is_open:
                return
            try:
                await conn.call(_PING)
            except RedisError:
                return

    def _on_push(self, push: list[Any]) -> None:
        apply_push(self._near, push)

    def _on_lost(self, error: BaseException) -> None:
        if self._closing:
            return
        if self._near.live:
            reason = "heartbeat" if isinstance(error, RedisTimeoutError) else "disconnected"
            self._near.disable(reason)
            self._log.warning("near-cache emptied and bypassed: invalidation connection %s (%s);"
                              " reconnecting", "timed out" if reason == "heartbeat" else "lost",
                              error)
