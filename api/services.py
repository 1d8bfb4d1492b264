"""What the lifespan builds and every handler uses: pools, the cache, the catalog, the settings.

The declaration (cachetail.toml) is read before anything starts; its catalog (columns,
codecs) needs MySQL's ``information_schema``.  A mistake there fails the start with one
line per problem.  MySQL unreachable at start is no mistake: the catalog is resolved in
the background, once a second, and until then declared routes answer 503.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import pymysql

from redis.asyncio import Redis, RedisCluster
from starlette.requests import Request

from api.cache import Cache
from api.clusterlean import ClusterLean
from api.clustertracking import ClusterTracker
from api.db import Database, ReadConfigError
from api.fills import AfterSelect
from api.freshness import AppliedWatch, Freshness, cluster_locator
from api.lean import LeanRedis
from api.nearcache import NearCache
from api.redisconn import Breaker, Guard, RedisUnavailable, build_client
from api.settings import ApiSettings
from api.errors import ApiError
from api.tracking import Tracker
from cachetail.config import Config, ConfigError
from cachetail.keyspace import Keyspace, prepare_slot_tags
from cachetail.schema import Catalog, Entity, Listing, resolve

log = logging.getLogger("api")


RESOLVE_RETRY_S = 1.0


@dataclass
class Services:
    settings: ApiSettings = field(repr=False)
    config: Config
    keys: Keyspace
    db: Database
    redis: Redis | RedisCluster
    guard: Guard
    cache: Cache
    fresh: Freshness
    applied: AppliedWatch
    lean: LeanRedis | ClusterLean | None = None  # the hot reads' connection(s)
    near: NearCache | None = None
    tracker: Tracker | ClusterTracker | None = None
    catalog: Catalog | None = None
    _resolving: asyncio.Task[None] | None = None
    _probing: asyncio.Task[None] | None = None

    @classmethod
    def build(cls, settings: ApiSettings, config: Config,
              after_select: AfterSelect | None = None) -> Services:
        keys = Keyspace.from_cache_settings(settings.cache)
        prepare_slot_tags()  # watermark keys name slots: built here, not in the first fill
        reads = settings.reads
        db = Database(settings.mysql, settings.db_pool_size,
                      settings.mysql_reads if reads.separate(settings.mysql) else None,
                      reads.wait_ms, reads.max_lag_ms)
        client = build_client(settings.redis)
        limit = settings.redis.max_connections if settings.redis.cluster else None
        guard = Guard(Breaker(settings.redis_breaker_s), limit, settings.redis.socket_timeout_s)
        lean = ClusterLean(settings.redis) if settings.redis.cluster else LeanRedis(settings.redis)
        prefixes = [keys.row_prefix(e.key_tag) for e in config.entities if e.nearcache]
        near, tracker = start_tracking(settings, prefixes, lean)  # in the lifespan: on the running loop
        fresh = Freshness(db, keys, settings.redis.cluster, reads.max_lag_ms)
        applied = AppliedWatch(keys, lean, _locator(settings, keys, lean), settings.redis.cluster,
                               lambda: fresh.flavor, tracker.sync if tracker is not None else None)
        cache = Cache(client, guard, keys, settings.cache, after_select=after_select,
                      lean=lean, near=near, fresh=fresh, applied=applied,
                      min_gtid_wait_s=settings.min_gtid_wait_ms / 1000)
        return cls(settings, config, keys, db, client, guard, cache, fresh, applied, lean, near, tracker)


    # ------------------------------------------------------------------ catalog

    def entity(self, name: str) -> Entity:
        catalog = self.ready()
        return next(e for e in catalog.entities if e.name == name)

    def listing(self, name: str) -> Listing:
        catalog = self.ready()
        return next(x for x in catalog.lists if x.name == name)

    def ready(self) -> Catalog:
        if self.catalog is None:
            raise ApiError(503, "starting", "waiting for MySQL to read the declared tables; retry",
                           {"Retry-After": "1"})
        return self.catalog

    def _resolve(self) -> Catalog:
        kwargs: dict[str, Any] = self.settings.mysql.pymysql_kwargs()
        conn = pymysql.connect(**kwargs)
        try:
            return resolve(self.config, conn, self.settings.mysql.database)
        finally:
            conn.close()

    async def resolve_catalog(self) -> None:
        """Now, or (MySQL unreachable) in the background until it works.  ConfigError: the
        declaration does not fit the database, which no retry will fix."""
        try:
            self.catalog = await anyio.to_thread.run_sync(self._resolve)
        except pymysql.err.MySQLError as exc:
            log.warning("MySQL unreachable (%s): declared routes answer 503 until the tables are read",
                        type(exc).__name__)
            self._resolving = asyncio.ensure_future(self._resolve_later())
            return
        await self.probe_reads()

    async def _resolve_later(self) -> None:
        while self.catalog is None:
            await asyncio.sleep(RESOLVE_RETRY_S)
            try:
                self.catalog = await anyio.to_thread.run_sync(self._resolve)
                log.info("declared tables read: serving %s", ", ".join(
                    [e.name for e in self.config.entities] + [x.name for x in self.config.lists]))
                await self.probe_reads()
            except pymysql.err.MySQLError:
                continue
            except ConfigError as exc:
                log_config_error(exc)
                return

    async def probe_reads(self) -> None:
        """What the read address is (DB_READ_HOST), now or in the background while it cannot
        be reached (until then every read goes to the primary).  ConfigError: it cannot
        serve fills as configured."""
        try:
            server = await anyio.to_thread.run_sync(self.db.probe)
        except ReadConfigError as exc:
            raise ConfigError("DB_READ_HOST", [str(exc)]) from None
        except pymysql.err.MySQLError as exc:
            if self._probing is None:
                log.warning("the read address is unreachable (%s): reads go to the primary until it answers",
                            type(exc).__name__)
                self._probing = asyncio.ensure_future(self._probe_later())
            return
        log.info("reads from %s", server.description)

    async def _probe_later(self) -> None:
        while self.db.server is None:
            await asyncio.sleep(RESOLVE_RETRY_S)
            try:
                await self.probe_reads()
            except ConfigError as exc:
                log_config_error(exc)
                return

    async def start(self) -> None:
        """The catalog, then on a cluster the slot maps before the first request needs them (a
        failure there is not fatal: each client loads its map on first use, and the guard
        covers that)."""
        await self.resolve_catalog()
        if isinstance(self.redis, RedisCluster):
            try:
                await self.guard.run("connect", self.redis.initialize, probe=True)
                if isinstance(self.lean, ClusterLean):
                    await self.guard.run("connect", self.lean.refresh, probe=True)
            except RedisUnavailable as exc:
                log.warning("Redis Cluster not reachable at start (%s); reads go to MySQL until it is",
                            exc.error_class)

    async def close(self) -> None:
        for task in (self._resolving, self._probing):
            if task is not None:
                task.cancel()
        await self.applied.close()
        if self.tracker is not None:
            await self.tracker.close()
        if self.lean is not None:
            await self.lean.close()
        await self.redis.aclose()
        if isinstance(self.redis, Redis):
            await self.redis.connection_pool.disconnect()
        self.db.close()


def log_config_error(exc: ConfigError) -> None:
    """A declaration that does not fit the database: one line per error."""
    for line in exc.errors:
        log.error("%s: %s", exc.source, line)


def start_tracking(settings: ApiSettings, prefixes: list[str], lean: LeanRedis | ClusterLean
                   ) -> tuple[NearCache | None, Tracker | ClusterTracker | None]:
    """The worker's near-cache and its tracker, connecting already; (None, None) when off."""
    if not settings.nearcache:
        log.info("near-cache off: NEARCACHE=false")
        return None, None
    if not prefixes:
        log.info("near-cache off: no entity declares nearcache = true")
        return None, None
    near = NearCache(settings.near.max_entries, settings.near.max_bytes)
    tracker: Tracker | ClusterTracker
    if isinstance(lean, ClusterLean):
        tracker = ClusterTracker(lean, prefixes, near)
    else:
        tracker = Tracker(settings.redis, prefixes, near)
    tracker.start()
    return near, tracker


def _locator(settings: ApiSettings, keys: Keyspace, lean: LeanRedis | ClusterLean) -> Any:
    """Where this worker subscribes to the invalidator's applied state (api/freshness.py)."""
    if isinstance(lean, ClusterLean):
        return cluster_locator(lean, keys.invalidator_applied())

    async def here() -> Any:
        return settings.redis

    return here


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found
