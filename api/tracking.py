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
from collections.abc import Sequence

from redis.exceptions import RedisError

from api.lean import RespConnection, open_connection, pack
from api.nearcache import NearCache
from api.trackerbase import HEARTBEAT_S, TrackerBase
from cachetail.settings import RedisSettings

log = logging.getLogger("api")

_PING = pack("PING")


class Tracker(TrackerBase[RespConnection]):
    def __init__(self, settings: RedisSettings, prefix: str | Sequence[str], near: NearCache, *,
                 heartbeat_s: float = HEARTBEAT_S, name: str = "cachetail-api-tracking") -> None:
        super().__init__(prefix, near, heartbeat_s=heartbeat_s, name=name)
        self._settings = settings
        self._conn: RespConnection | None = None

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

    async def _establish(self) -> RespConnection:
        conn = await open_connection(
            self._settings, name=self._name, resp3=True, on_push=self._on_push,
            on_lost=self._on_lost, setup=(self._tracking,))
        self._conn = conn
        self._near.enable()
        log.info("near-cache on: Redis tracks %r for this worker (BCAST)", self.prefix)
        return conn

    async def _watch(self, conn: RespConnection) -> None:
        try:
            await self._heartbeat(conn)
        finally:
            conn.close()
            self._conn = None

    def _close_connections(self) -> None:
        if self._conn is not None:
            self._conn.close()

    async def _heartbeat(self, conn: RespConnection) -> None:
        while True:
            await asyncio.wait({conn.closed}, timeout=self._heartbeat_s)
            if not conn.is_open:
                return
            try:
                await conn.call(_PING)
            except RedisError:
                return

    def _on_lost(self, error: BaseException) -> None:
        if not self._closing:
            self._lost(error, "invalidation connection")
