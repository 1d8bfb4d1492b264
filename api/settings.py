"""The API's settings: one frozen dataclass built from a mapping (environment + .env)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cachetail.settings import (
    CacheSettings,
    MySQLSettings,
    Reader,
    RedisSettings,
    Secret,
    SettingsError,
)

__all__ = ["ApiSettings", "SettingsError"]


@dataclass(frozen=True)
class ApiSettings:
    mysql: MySQLSettings
    redis: RedisSettings
    cache: CacheSettings
    admin_token: Secret = field(repr=False)
    host: str
    port: int
    workers: int
    db_pool_size: int
    redis_breaker_s: float
    health_timeout_s: float
    # The lean connection (and client tracking) talk to one node: with a cluster, redis-py reads.
    redis_cluster: bool

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ApiSettings:
        r = Reader(env)
        return cls(
            mysql=MySQLSettings.from_env(env),
            redis=RedisSettings.from_env(env),
            cache=CacheSettings.from_env(env),
            admin_token=r.secret("ADMIN_TOKEN", ""),
            host=r.str("API_HOST", "127.0.0.1"),
            port=r.int("API_PORT", 5000, lo=1, hi=65535),
            workers=r.int("API_WORKERS", 1, lo=1, hi=64),
            db_pool_size=r.int("API_DB_POOL_SIZE", 10, lo=1, hi=200),
            # After a Redis connection failure, skip Redis for this long (0 = never skip).
            redis_breaker_s=r.float("API_REDIS_BREAKER_S", 1.0, lo=0.0, hi=60.0),
            health_timeout_s=r.float("API_HEALTH_TIMEOUT_S", 1.0, lo=0.05, hi=30.0),
            redis_cluster=r.bool("REDIS_CLUSTER", False),
        )
