"""The API's settings: one frozen dataclass built from a mapping (environment + .env)."""

from __future__ import annotations

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

__all__ = ["ApiSettings", "NearCacheSettings", "SettingsError"]


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

    @property
    def nearcache(self) -> bool:
        return self.near.requested

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ApiSettings:
        r = Reader(env)
        return cls(
            mysql=MySQLSettings.from_env(env),
            redis=RedisSettings.from_env(env),
            cache=CacheSettings.from_env(env),
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
        )
