"""The invalidator's configuration: one frozen dataclass built from a mapping.

It reads the same variables as the API (``DB_*``, ``REDIS_*``, ``CACHE_*``) plus
its own.  ``INVALIDATOR_DB_USER`` / ``INVALIDATOR_DB_PASSWORD``, when set, take
the place of ``DB_USER`` / ``DB_PASSWORD`` so one ``.env`` can hold both
accounts.  Every error is a :class:`SettingsError` naming its variable.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cachetail.config import config_path
from cachetail.keyspace import Keyspace
from cachetail.settings import (
    CacheSettings,
    MySQLSettings,
    Reader,
    RedisSettings,
    SettingsError,
)

__all__ = ["InvalidatorSettings", "SettingsError"]

MAX_SERVER_ID = 2**32 - 1
MODES = ("delete", "refresh")
POSITION_STORES = ("redis", "file")
DEFAULT_STATE_DIR = ".state/invalidator"


@dataclass(frozen=True)
class InvalidatorSettings:
    mysql: MySQLSettings
    redis: RedisSettings
    cache: CacheSettings
    server_id: int
    mode: str
    metrics_host: str
    metrics_port: int
    position_store: str
    state_dir: Path
    heartbeat_s: float
    retry_max_s: float
    lease_s: float = 5.0
    replay_window_s: float = 300.0
    config_path: Path = Path("cachetail.toml")  # CACHETAIL_CONFIG: what is cached (cachetail/config.py)
    audit: bool = True  # AUDIT: the consistency auditor (invalidator/audit.py), in the leader
    audit_delay_s: float = 1.0
    audit_sample_keys_per_s: float = 10.0
    audit_db_queries_per_s: float = 20.0
    audit_invalidation_share: float = 0.1
    watermark_slots_max: int = 64  # one Redis node: larger batches mark the node's watermark

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> InvalidatorSettings:
        env = dict(env)
        if (env.get("INVALIDATOR_DB_USER") or "").strip():
            env["DB_USER"] = env["INVALIDATOR_DB_USER"]
            env["DB_PASSWORD"] = env.get("INVALIDATOR_DB_PASSWORD", "")
        r = Reader(env)
        return cls(
            mysql=MySQLSettings.from_env(env),
            redis=RedisSettings.from_env(env),
            cache=CacheSettings.from_env(env),
            server_id=r.int("INVALIDATOR_SERVER_ID", None, lo=1, hi=MAX_SERVER_ID),
            mode=r.choice("INVALIDATOR_MODE", "delete", MODES),
            metrics_host=r.str("INVALIDATOR_METRICS_HOST", "127.0.0.1"),
            metrics_port=r.int("INVALIDATOR_METRICS_PORT", 9101, lo=1, hi=65535),
            position_store=r.choice("INVALIDATOR_POSITION_STORE", "redis", POSITION_STORES),
            state_dir=Path(r.str("INVALIDATOR_STATE_DIR", DEFAULT_STATE_DIR, max_len=4096)),
            heartbeat_s=r.float("INVALIDATOR_HEARTBEAT_S", 2.0, lo=0.2, hi=30.0),
            retry_max_s=r.float("INVALIDATOR_RETRY_MAX_S", 5.0, lo=0.1, hi=300.0),
            lease_s=r.float("INVALIDATOR_LEASE_S", 5.0, lo=0.5, hi=300.0),
            replay_window_s=r.float("INVALIDATOR_REPLAY_WINDOW_S", 300.0, lo=10.0, hi=86_400.0),
            config_path=config_path(env),
            audit=r.bool("AUDIT", True),
            audit_delay_s=r.float("AUDIT_DELAY_S", 1.0, lo=0.05, hi=3600.0),
            audit_sample_keys_per_s=r.float("AUDIT_SAMPLE_KEYS_PER_S", 10.0, lo=0.0, hi=10_000.0),
            audit_db_queries_per_s=r.float("AUDIT_DB_QUERIES_PER_S", 20.0, lo=0.1, hi=10_000.0),
            audit_invalidation_share=r.float("AUDIT_INVALIDATION_SHARE", 0.1, lo=0.0, hi=1.0),
            watermark_slots_max=r.int("INVALIDATOR_WATERMARK_SLOTS_MAX", 64, lo=0, hi=16384),
        )

    @property
    def keyspace(self) -> Keyspace:
        return Keyspace.from_cache_settings(self.cache)

    @property
    def identity(self) -> str:
        """Who this invalidator is in the leader lease: its host and binlog server id."""
        return f"{socket.gethostname()}/{self.server_id}"

    @property
    def stale_after_s(self) -> float:
        """No event (heartbeats included) for this long: not following (--check fails)."""
        return max(10.0, 4 * self.heartbeat_s)
