"""What the lifespan builds and every handler uses: pools, the cache, the settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from redis.asyncio import Redis, RedisCluster
from starlette.requests import Request

from api.cache import AfterSelect, Cache
from api.clusterlean import ClusterLean
from api.clustertracking import ClusterTracker
from api.db import Database
from api.lean import LeanRedis
from api.nearcache import NearCache
from api.redisconn import Breaker, Guard, RedisUnavailable, build_client
from api.settings import ApiSettings
from api.tracking import Tracker
from cachetail.keyspace import Keyspace

log = logging.getLogger("api")


@dataclass
class Services:
    settings: ApiSettings = field(repr=False)
    keys: Keyspace
    db: Database
    redis: Redis | RedisCluster
    guard: Guard
    cache: Cache
    lean: LeanRedis | ClusterLean | None = None  # the hot reads' connection(s)
    near: NearCache | None = None
    tracker: Tracker | ClusterTracker | None = None

    @classmethod
    def build(cls, settings: ApiSettings, after_select: AfterSelect | None = None) -> Services:
        keys = Keyspace.from_cache_settings(settings.cache)
        db = Database(settings.mysql, settings.db_pool_size)
        client = build_client(settings.redis)
        limit = settings.redis.max_connections if settings.redis.cluster else None
        guard = Guard(Breaker(settings.redis_breaker_s), limit, settings.redis.socket_timeout_s)
        lean = ClusterLean(settings.redis) if settings.redis.cluster else LeanRedis(settings.redis)
        near, tracker = start_tracking(settings, keys, lean)  # in the lifespan: on the running loop
        cache = Cache(client, guard, keys, settings.cache, after_select=after_select,
                      lean=lean, near=near)
        return cls(settings, keys, db, client, guard, cache, lean, near, tracker)

    async def start(self) -> None:
        """On a cluster, load the slot maps before the first request needs them (a failure
        here is not fatal: each client loads its map on first use, and the guard covers that)."""
        if isinstance(self.redis, RedisCluster):
            try:
                await self.guard.run("connect", self.redis.initialize, probe=True)
                if isinstance(self.lean, ClusterLean):
                    await self.guard.run("connect", self.lean.refresh, probe=True)
            except RedisUnavailable as exc:
                log.warning("Redis Cluster not reachable at start (%s); reads go to MySQL until it is",
                            exc.error_class)

    async def close(self) -> None:
        if self.tracker is not None:
            await self.tracker.close()
        if self.lean is not None:
            await self.lean.close()
        await self.redis.aclose()
        if isinstance(self.redis, Redis):
            await self.redis.connection_pool.disconnect()
        self.db.close()


def start_tracking(settings: ApiSettings, keys: Keyspace, lean: LeanRedis | ClusterLean
                   ) -> tuple[NearCache | None, Tracker | ClusterTracker | None]:
    """The worker's near-cache and its tracker, connecting already; (None, None) when off."""
    if not settings.nearcache:
        log.info("near-cache off: NEARCACHE=false")
        return None, None
    near = NearCache(settings.near.max_entries, settings.near.max_bytes)
    tracker: Tracker | ClusterTracker
    if isinstance(lean, ClusterLean):
        tracker = ClusterTracker(lean, keys.users_prefix(), near)
    else:
        tracker = Tracker(settings.redis, keys.users_prefix(), near)
    tracker.start()
    return near, tracker


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found
