"""ApiSettings, the Redis client it builds, the breaker: no servers needed."""

from __future__ import annotations

import subprocess
import sys

import pytest
from redis.asyncio import SSLConnection
from redis.asyncio.connection import Connection

from api.redisconn import Breaker, build_client
from api.settings import ApiSettings, SettingsError

BASE = {"DB_USER": "cachetail_api", "DB_PASSWORD": "db-secret-pw",
        "REDIS_PASSWORD": "redis-secret-pw", "ADMIN_TOKEN": "admin-secret-token"}


def test_defaults_and_secrets_hidden() -> None:
    settings = ApiSettings.from_env(BASE)
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 5000, 1)
    assert settings.config_path.name == "cachetail.toml" and settings.config_path.is_file()
    assert settings.redis.socket_timeout_s == 0.25
    assert settings.admin_token.reveal() == "admin-secret-token"
    shown = repr(settings) + str(settings)
    for secret in ("db-secret-pw", "redis-secret-pw", "admin-secret-token"):
        assert secret not in shown


@pytest.mark.parametrize(("name", "value"), [
    ("API_PORT", "0"), ("API_WORKERS", "many"), ("API_DB_POOL_SIZE", "0"),
    ("API_REDIS_BREAKER_S", "-1"), ("REDIS_TIMEOUT_S", "x"), ("CACHE_LEASE_MS", "5"),
])
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        ApiSettings.from_env({**BASE, name: value})
    assert str(caught.value).startswith(f"{name}: expected")


@pytest.mark.parametrize("name", ["CACHE_TTL_USER_S", "CACHE_TTL_PRODUCTS_S", "CACHE_TTL_NEGATIVE_S"])
def test_ttls_moved_to_the_declaration_are_refused_by_name(name: str) -> None:
    with pytest.raises(SettingsError) as caught:
        ApiSettings.from_env({**BASE, name: "60"})
    assert str(caught.value).startswith(f"{name}: expected nothing: TTLs are declared in cachetail.toml")


def test_redis_tls_uses_ssl_connections_and_a_bounded_pool() -> None:
    plain = build_client(ApiSettings.from_env(BASE).redis)
    tls = build_client(ApiSettings.from_env({**BASE, "REDIS_TLS": "true",
                                             "REDIS_MAX_CONNECTIONS": "7"}).redis)
    assert plain.connection_pool.connection_class is Connection
    assert tls.connection_pool.connection_class is SSLConnection
    assert tls.connection_pool.max_connections == 7
    assert tls.connection_pool.timeout == 0.25  # waiting for a connection is bounded too
    assert tls.connection_pool.connection_kwargs["retry"].get_retries() == 0
    assert "redis-secret-pw" not in repr(tls)


def test_breaker_opens_for_its_period_only() -> None:
    now = [100.0]
    breaker = Breaker(1.0, clock=lambda: now[0])
    assert not breaker.is_open
    breaker.trip()
    now[0] += 0.99
    assert breaker.is_open
    now[0] += 0.02
    assert not breaker.is_open
    disabled = Breaker(0.0, clock=lambda: now[0])
    disabled.trip()
    assert not disabled.is_open


def test_entry_point_imports_no_prometheus_before_the_metrics_dir_is_set() -> None:
    code = ("import sys, api.__main__; "
            "sys.exit(1 if 'prometheus_client' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
