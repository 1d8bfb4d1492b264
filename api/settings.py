"""The API's settings: one frozen dataclass built from a mapping (environment + .env)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cachetail.config import config_path
from cachetail.settings import (
    CacheSettings,
    MySQLSettings,
    Reader,
    RedisSettings,
    Secret,
    SettingsError,
)

__all__ = ["ApiSettings", "NearCacheSettings", "ReplicaSettings", "SettingsError"]


@dataclass(frozen=True)
class NearCacheSettings:
    """The per-worker near-cache of users (api/nearcache.py); bounds are per worker."""

    requested: bool
    max_entries: int
    max_bytes: int

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> NearCacheSettings:
        r = Reader(env)
        return cls(
            requested=r.bool("NEARCACHE", True),
            max_entries=r.int("NEARCACHE_MAX_ENTRIES", 100_000, lo=1, hi=100_000_000),
            max_bytes=r.int("NEARCACHE_MAX_BYTES", 64 * 1024 * 1024, lo=4096, hi=1 << 40),
        )


@dataclass(frozen=True)
class ReplicaSettings:
    """Where misses, lists and nocache routes read (DB_READ_HOST/DB_READ_PORT; default the
    primary, DB_HOST/DB_PORT), and how a fill from there stays no older than what the
    invalidator has applied (api/freshness.py)."""

    host: str
    port: int
    wait_ms: int  # DB_READ_WAIT_MS: the longest a fill waits for the replica, then reads the primary
    max_lag_ms: int  # DB_READ_MAX_LAG_MS: 0 waits on GTIDs; >0 reads the primary for that long after a change

    def separate(self, primary: MySQLSettings) -> bool:
        """Reads go to another address than the primary's."""
        return (self.host, self.port) != (primary.host, primary.port)

    @classmethod
    def from_env(cls, env: Mapping[str, str], primary: MySQLSettings, lease_ms: int) -> ReplicaSettings:
        r = Reader(env)
        # the fill holds its lease while it waits, and reads the primary after a timeout
        longest = max(1, lease_ms // 2)
        return cls(
            host=r.str("DB_READ_HOST", primary.host),
            port=r.int("DB_READ_PORT", primary.port, lo=1, hi=65535),
            wait_ms=r.int("DB_READ_WAIT_MS", min(100, longest), lo=1, hi=longest),
            max_lag_ms=r.int("DB_READ_MAX_LAG_MS", 0, lo=0, hi=3_600_000),
        )


@dataclass(frozen=True)
class ApiSettings:
    mysql: MySQLSettings
    redis: RedisSettings
    cache: CacheSettings
    near: NearCacheSettings
    admin_token: Secret = field(repr=False)
    host: str
    port: int
    workers: int
    db_pool_size: int
    redis_breaker_s: float
    health_timeout_s: float
    config_path: Path = Path("cachetail.toml")  # CACHETAIL_CONFIG: what is cached (cachetail/config.py)
    replica: ReplicaSettings | None = None  # None: every read goes to the primary (DB_HOST)
    min_gtid_wait_ms: int = 200  # API_MIN_GTID_WAIT_MS: a Cachetail-Min-GTID read waits this long

    @property
    def nearcache(self) -> bool:
        return self.near.requested

    @property
    def reads(self) -> ReplicaSettings:
        """Where reads go; the primary itself unless DB_READ_HOST names another server."""
        if self.replica is not None:
            return self.replica
        return ReplicaSettings(self.mysql.host, self.mysql.port, 100, 0)

    @property
    def mysql_reads(self) -> MySQLSettings:
        """The MySQL settings of the read address (the primary's account and TLS)."""
        return dataclasses.replace(self.mysql, host=self.reads.host, port=self.reads.port)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ApiSettings:
        r = Reader(env)
        mysql = MySQLSettings.from_env(env)
        cache = CacheSettings.from_env(env)
        return cls(
            mysql=mysql,
            redis=RedisSettings.from_env(env),
            cache=cache,
            near=NearCacheSettings.from_env(env),
            admin_token=r.secret("ADMIN_TOKEN", ""),
            host=r.str("API_HOST", "127.0.0.1"),
            port=r.int("API_PORT", 5000, lo=1, hi=65535),
            workers=r.int("API_WORKERS", 1, lo=1, hi=64),
            db_pool_size=r.int("API_DB_POOL_SIZE", 10, lo=1, hi=200),
            # After a Redis connection failure, skip Redis for this long (0 = never skip).
            redis_breaker_s=r.float("API_REDIS_BREAKER_S", 1.0, lo=0.0, hi=60.0),
            health_timeout_s=r.float("API_HEALTH_TIMEOUT_S", 1.0, lo=0.05, hi=30.0),
            config_path=config_path(env),
            replica=ReplicaSettings.from_env(env, mysql, cache.lease_ms),
            min_gtid_wait_ms=r.int("API_MIN_GTID_WAIT_MS", 200, lo=0, hi=10_000),
        )
