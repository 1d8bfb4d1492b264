"""Redis and MySQL failing under the API: bounded answers, BYPASS, 503 only for uncached misses."""

from __future__ import annotations

import os
import signal
import time

import pytest

from cachetail.keyspace import Keyspace
from support.api import Delta, assert_json_error, running, sample
from support.waiting import wait_for_async

pytestmark = pytest.mark.anyio
KEYS = Keyspace()


@pytest.fixture(autouse=True)
def _near_on_and_off(nearcache: str) -> str:
    """Every test here runs with the near-cache on and with it off."""
    return nearcache


def redis_env(stack, server, **extra: str) -> dict[str, str]:
    return {**stack.api_env(), "REDIS_HOST": server.host, "REDIS_PORT": str(server.port), **extra}


async def test_redis_killed_answers_from_mysql_then_recovers(stack, redis_factory) -> None:
    server = redis_factory()
    env = redis_env(stack, server, API_REDIS_BREAKER_S="0.3")
    errors = Delta(("cachetail_redis_errors_total", {"operation": "get"}),
                   ("cachetail_redis_skipped_total", {"operation": "get"}),
                   ("cachetail_cache_lookups_total", {"entity": "user", "result": "bypass"}))
    async with running(env) as (app, client):
        warm = await client.get("/user/5")
        server.kill()
        started = time.monotonic()
        answers = [await client.get(f"/user/{5 + i % 3}") for i in range(30)]
        products = await client.get("/products")
        elapsed = time.monotonic() - started
        health = await client.get("/health")
        stats = await client.get("/cache/stats")
        server.start()
        breaker = app.state.services.guard.breaker
        await wait_for_async(lambda: not breaker.is_open, 2, "the breaker's open period to end")
        back = [await client.get("/user/5") for _ in range(2)]
    assert warm.headers["x-cache"] == "MISS"
    assert {(r.status_code, r.headers["x-cache"]) for r in answers} == {(200, "BYPASS")}
    assert answers[0].content == warm.content
    assert products.status_code == 200 and len(products.json()) == 1000
    assert products.headers["x-cache"] == "BYPASS"
    assert elapsed < 3.0
    get_errors, skipped, bypasses = errors()
    assert get_errors >= 1 and skipped >= 1  # the breaker spared later requests the attempt
    assert bypasses == 30
    assert (health.status_code, health.json()["status"]) == (200, "degraded")
    assert health.json()["redis"] == {"state": "down", "error": "ConnectionError"}
    assert stats.status_code == 200 and stats.json()["redis"]["state"] == "unavailable"
    assert [r.headers["x-cache"] for r in back] == ["MISS", "HIT"]  # a fresh server is empty


async def test_hung_redis_costs_a_bounded_timeout(stack, redis_factory) -> None:
    server = redis_factory()
    env = redis_env(stack, server, REDIS_TIMEOUT_S="0.2", API_REDIS_BREAKER_S="0")
    async with running(env) as (_, client):
        await client.get("/user/8")
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            hung = await client.get("/user/8")
            elapsed = time.monotonic() - started
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
    assert (hung.status_code, hung.headers["x-cache"]) == (200, "BYPASS")
    assert hung.json()["id"] == 8
    assert 0.15 < elapsed < 1.5


async def test_mysql_stopped_serves_hits_and_503s_misses(stack, mariadb_factory, redis_client) -> None:
    server = mariadb_factory()
    env = {**stack.api_env(), "DB_HOST": server.host, "DB_PORT": str(server.port),
           "DB_CONNECT_TIMEOUT_S": "1", "CACHE_LEASE_WAIT_MS": "50"}
    async with running(env) as (_, client):
        warm_user = await client.get("/user/21")
        warm_products = await client.get("/products")
        server.stop()
        started = time.monotonic()
        hit = await client.get("/user/21")
        hit_products = await client.get("/products")
        miss = await client.get("/user/22")
        miss_products = await client.get("/products", params={"category": "x"})
        nocache = await client.get("/user/21/nocache")
        health = await client.get("/health")
        elapsed = time.monotonic() - started
    assert (hit.status_code, hit.headers["x-cache"], hit.content) == (200, "HIT", warm_user.content)
    assert (hit_products.status_code, hit_products.content) == (200, warm_products.content)
    for response in (miss, miss_products, nocache):
        assert_json_error(response, 503)
    assert redis_client.get(KEYS.user(22)) is None  # the failed fill gave its lease back
    assert health.status_code == 503
    assert health.json()["status"] == "down" and health.json()["mysql"]["state"] == "down"
    assert health.json()["redis"] == {"state": "ok"}
    assert elapsed < 8.0


async def test_breaker_skips_redis_only_while_open(stack, redis_factory) -> None:
    server = redis_factory()
    env = redis_env(stack, server, API_REDIS_BREAKER_S="5")
    skipped = Delta(("cachetail_redis_skipped_total", {"operation": "get"}))
    async with running(env) as (app, client):
        server.kill()
        first = await client.get("/user/9")  # fails, opens the breaker
        server.start()
        second = await client.get("/user/9")  # Redis is back, but the breaker is still open
        assert skipped() == [1]
        health = await client.get("/health")  # a successful probe closes it
        third = await client.get("/user/9")
    assert [r.headers["x-cache"] for r in (first, second, third)] == ["BYPASS", "BYPASS", "MISS"]
    assert health.json()["status"] == "ok"
    assert sample("cachetail_redis_skipped_total", operation="get") >= 1
