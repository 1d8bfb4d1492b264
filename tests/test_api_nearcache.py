"""The near-cache (api/nearcache.py, api/tracking.py) against real Redis and MariaDB:
served from the worker's memory, dropped by every kind of change Redis announces,
emptied and bypassed whenever the promise to announce is broken, bounded."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
import tracemalloc
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis

from api.nearcache import ENTRY_OVERHEAD, NearCache
from api.settings import ApiSettings, SettingsError
from api.lean import LeanRedis
from api.services import start_tracking
from api_support import Delta, anyio_backend, api_process, running  # noqa: F401
from cachetail.keyspace import LEASE, NEGATIVE, Keyspace
from invalidator_support import wait_for, workers  # noqa: F401

pytestmark = pytest.mark.anyio
KEYS = Keyspace()
TRACKING = "cachetail-api-tracking"


def primaries(client: redis.Redis | redis.RedisCluster) -> list[redis.Redis]:
    """One client per primary: the node itself, or each primary of a cluster."""
    if isinstance(client, redis.RedisCluster):
        return [client.get_redis_connection(node) for node in client.get_primaries()]
    return [client]


def tracking_clients(client: redis.Redis | redis.RedisCluster,
                     key: str | None = None) -> list[dict[str, Any]]:
    """The tracking connections on every primary (or on the one holding ``key``); each
    entry's "node" is the client to kill it through."""
    nodes = primaries(client)
    if key is not None and isinstance(client, redis.RedisCluster):
        nodes = [client.get_redis_connection(client.get_node_from_key(key))]
    return [{**c, "node": node} for node in nodes for c in node.client_list()
            if c["name"] == TRACKING]


def get_calls(client: redis.Redis | redis.RedisCluster) -> int:
    return sum(node.info("commandstats").get("cmdstat_get", {}).get("calls", 0)
               for node in primaries(client))


async def until(predicate: Callable[[], object], timeout_s: float, what: str) -> float:
    """Poll without blocking the loop (the tracker runs on it); seconds it took."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(0.002)
    return time.monotonic() - started


def near(result: str) -> tuple[str, dict[str, str]]:
    return "cachetail_nearcache_lookups_total", {"result": result}


def tiers(responses: list) -> list[str | None]:  # type: ignore[type-arg]
    return [r.headers.get("x-cache-tier") for r in responses]


# ---------------------------------------------------------------- serving


@pytest.mark.redis_kinds("single", "cluster")
async def test_hits_are_served_from_the_workers_memory(stack, redis_client) -> None:
    delta = Delta(near("hit"), ("cachetail_cache_lookups_total", {"entity": "user", "result": "hit"}))
    async with running(stack.api_env()) as (app, client):
        svc = app.state.services
        assert svc.near.live
        assert len(tracking_clients(redis_client)) == len(primaries(redis_client))
        first, second = await client.get("/user/42"), await client.get("/user/42")
        gets = get_calls(redis_client)
        served = [await client.get("/user/42") for _ in range(5)]
        assert get_calls(redis_client) == gets  # Redis not asked
    assert [first.headers["x-cache"], second.headers["x-cache"]] == ["MISS", "HIT"]
    assert tiers([first, second]) == [None, "redis"]
    assert {(r.headers["x-cache"], r.headers["x-cache-tier"]) for r in served} == {("HIT", "near")}
    assert {r.content for r in served} == {first.content}
    assert delta() == [5, 6]  # cache_lookups_total keeps counting every hit


@pytest.mark.redis_kinds("single", "cluster")
async def test_negative_entries_are_kept_and_dropped_like_values(stack, redis_client) -> None:
    async with running(stack.api_env()) as (app, client):
        svc = app.state.services
        answers = [await client.get("/user/4000000001") for _ in range(3)]
        assert redis_client.get(KEYS.user(4000000001)) == NEGATIVE
        redis_client.delete(KEYS.user(4000000001))  # the invalidator, on an INSERT of that id
        await svc.tracker.sync()
        assert KEYS.user(4000000001) not in svc.near
    assert [r.status_code for r in answers] == [404] * 3
    assert tiers(answers) == [None, "redis", "near"]


@pytest.mark.redis_kinds("single", "cluster")
async def test_leases_are_never_kept(stack, redis_client) -> None:
    key = KEYS.user(303)
    redis_client.set(key, LEASE + b"another-process", px=10_000)
    async with running(stack.api_env(), CACHE_LEASE_WAIT_MS="20") as (app, client):
        answers = [await client.get("/user/303") for _ in range(2)]
        assert key not in app.state.services.near
    assert [(r.status_code, r.headers["x-cache"]) for r in answers] == [(200, "MISS")] * 2


# ------------------------------------------------------- the crossing race


@pytest.mark.redis_kinds("single", "cluster")
@pytest.mark.parametrize("change", ["set", "delete", "flushdb", "kill"])
async def test_an_invalidation_crossing_the_reply_voids_it(stack, redis_client, change) -> None:
    """The GET's reply has the old value; before the near-cache keeps it, the key changes
    and the invalidation is applied (the seam puts it exactly there).  Kept anyway, the
    old value would be served from memory until the next change."""
    key, old, new = KEYS.user(51), b'{"id":51,"v":"old"}', b'{"id":51,"v":"new"}'
    redis_client.set(key, old)
    raced = Delta(("cachetail_nearcache_fills_total", {"result": "invalidated"}))
    lost = Delta(("cachetail_nearcache_resets_total", {"reason": "disconnected"}))
    async with running(stack.api_env()) as (app, client):
        svc = app.state.services

        async def change_between_reply_and_store(read_key: str) -> None:
            if change == "set":  # the invalidator in refresh mode
                redis_client.set(read_key, new)
            elif change == "delete":  # the invalidator's DEL
                redis_client.delete(read_key)
            elif change == "flushdb":
                redis_client.flushdb()
            else:  # the connection of the primary holding the key
                (conn,) = tracking_clients(redis_client, read_key)
                conn["node"].client_kill_filter(_id=conn["id"])
                await until(lambda: lost() == [1], 2, "the loss noticed")
            await svc.tracker.sync()  # the invalidation has been applied

        svc.cache.after_tracked_read = change_between_reply_and_store
        racing = await client.get("/user/51")
        svc.cache.after_tracked_read = None
        assert racing.content == old  # it answers what it read...
        assert key not in svc.near  # ...and does not keep it
        await until(lambda: svc.near.live, 3, "tracking back")
        after = [await client.get("/user/51") for _ in range(3)]
    assert raced() == [1]
    if change == "set":
        assert [r.content for r in after] == [new] * 3 and tiers(after) == ["redis", "near", "near"]
    elif change == "kill":
        assert [r.content for r in after] == [old] * 3 and tiers(after) == ["redis", "near", "near"]
    else:  # gone from Redis: refilled from MySQL
        assert after[0].headers["x-cache"] == "MISS" and after[0].json()["id"] == 51
        assert old not in {r.content for r in after}


# ---------------------------------------------------- changes reach it


@pytest.mark.redis_kinds("single", "cluster")
async def test_a_write_through_mysql_reaches_the_near_cache(stack, db, redis_client, workers) -> None:
    worker = workers(stack.invalidator_env())
    key = worker.keyspace.user(88)
    name = f"Near {worker.prefix}"
    async with running(stack.api_env(), CACHE_KEY_PREFIX=worker.prefix) as (app, client):
        svc = app.state.services
        warm = [await client.get("/user/88") for _ in range(3)]
        assert tiers(warm)[-1] == "near" and key in svc.near
        with db.cursor() as cur:
            cur.execute("UPDATE users SET full_name = %s WHERE id = 88", (name,))
        wait_for(lambda: redis_client.exists(key) == 0, what="the invalidator's delete")
        await svc.tracker.sync()
        assert key not in svc.near  # dropped once Redis had deleted it (plus one round trip)
        fresh = await client.get("/user/88")
    assert (fresh.headers["x-cache"], fresh.json()["full_name"]) == ("MISS", name)
    assert worker.stop() == 0


@pytest.mark.redis_kinds("single", "cluster")
async def test_clear_empties_every_workers_near_cache(stack, redis_client) -> None:
    env = stack.api_env()
    auth = {"Authorization": f"Bearer {env['ADMIN_TOKEN']}"}
    async with running(env) as (app_a, a), running(env) as (app_b, b):
        for client in (a, b):
            for user_id in (1, 2, 3):
                for _ in range(2):
                    await client.get(f"/user/{user_id}")
        near_a, near_b = app_a.state.services.near, app_b.state.services.near
        assert near_a.entries == near_b.entries == 3
        cleared = await a.post("/cache/clear", headers=auth)
        assert near_a.entries == 0  # the worker that cleared: before it answered
        await app_b.state.services.tracker.sync()
        assert near_b.entries == 0  # every other worker: as the deletes are announced
        after = [await c.get("/user/1") for c in (a, b)]
    assert cleared.json() == {"removed": 3}
    assert [r.headers["x-cache"] for r in after] == ["MISS", "MISS"] or \
        [r.headers["x-cache"] for r in after] == ["MISS", "HIT"]  # b may read a's refill


@pytest.mark.redis_kinds("single", "cluster")
async def test_flush_empties_and_tracking_stays(stack, redis_client) -> None:
    flushes = Delta(("cachetail_nearcache_resets_total", {"reason": "flush"}))
    async with running(stack.api_env()) as (app, client):
        svc = app.state.services
        for _ in range(2):
            await client.get("/user/9")
        assert svc.near.entries == 1
        redis_client.flushdb()  # Redis announces "everything" (a null)
        await svc.tracker.sync()
        assert (svc.near.entries, svc.near.live) == (0, True)
    assert flushes() == [len(primaries(redis_client))]  # each primary flushed says so


@pytest.mark.redis_kinds("single", "cluster")
async def test_entries_live_no_longer_than_their_redis_ttl(stack, redis_client) -> None:
    """Redis announces an expiry only when it removes the key, which may be long after
    the TTL if nothing reads it there (and hits no longer do): the near-cache keeps an
    entry no longer than the TTL Redis reported with it."""
    key = KEYS.user(61)
    redis_client.set(key, b'{"id":61,"v":"short"}', px=400)
    async with running(stack.api_env()) as (app, client):
        held = [await client.get("/user/61") for _ in range(2)]
        await asyncio.sleep(0.45)
        later = await client.get("/user/61")
    assert tiers(held) == ["redis", "near"]
    assert later.headers["x-cache"] == "MISS" and b"short" not in later.content


def test_an_entry_expires_with_the_ttl_it_was_read_with() -> None:
    now = [1000.0]
    cache = NearCache(100, 1 << 20, clock=lambda: now[0])
    cache.enable()
    expired = Delta(("cachetail_nearcache_evictions_total", {"reason": "expired"}))
    for key, pttl in (("a", 400), ("b", -1), ("c", -2), ("d", 0)):
        ticket = cache.begin(key)
        assert ticket is not None
        cache.finish(ticket, b"{}", pttl)
    assert ("a" in cache, "b" in cache, "c" in cache, "d" in cache) == (True, True, False, False)
    now[0] += 0.399
    assert cache.get("a") == b"{}"
    now[0] += 0.002
    assert cache.get("a") is None and "a" not in cache
    now[0] += 10**6
    assert cache.get("b") == b"{}"  # no TTL in Redis: until a change or the bounds
    cache.close()
    assert expired() == [1]


# ------------------------------------------------- the promise is broken


async def test_killed_tracking_connection_empties_and_bypasses_until_restored(stack, redis_client) -> None:
    lost = Delta(("cachetail_nearcache_resets_total", {"reason": "disconnected"}))
    async with running(stack.api_env()) as (app, client):
        svc = app.state.services
        for user_id in (11, 12, 13):
            for _ in range(2):
                await client.get(f"/user/{user_id}")
        assert svc.near.entries == 3
        (before,) = tracking_clients(redis_client)
        before["node"].client_kill_filter(_id=before["id"])
        noticed = await until(lambda: lost() == [1], 1, "the loss noticed")
        assert svc.near.entries == 0
        changed = b'{"id":11,"changed":"while tracking was down"}'
        redis_client.set(KEYS.user(11), changed)  # announced to nobody
        meanwhile = await client.get("/user/11")
        await until(lambda: svc.near.live, 3, "tracking back")
        (after,) = tracking_clients(redis_client)
        again = [await client.get("/user/11") for _ in range(2)]
    assert noticed < 0.5
    assert (meanwhile.content, meanwhile.headers["x-cache-tier"]) == (changed, "redis")
    assert after["id"] != before["id"]
    assert [r.content for r in again] == [changed] * 2 and tiers(again) == ["redis", "near"]


async def test_redis_restart_empties_bypasses_then_tracks_the_new_server(stack, redis_factory) -> None:
    server = redis_factory()
    env = {**stack.api_env(), "REDIS_HOST": server.host, "REDIS_PORT": str(server.port),
           "API_REDIS_BREAKER_S": "0.1"}
    bypassed = Delta(near("bypass"))
    async with running(env) as (app, client):
        svc = app.state.services
        warm = [await client.get("/user/5") for _ in range(3)]
        server.stop()
        await until(lambda: not svc.near.live, 1, "the loss noticed")
        down = [await client.get("/user/5") for _ in range(3)]
        server.start()  # same port, empty: nothing the near-cache held is there
        await until(lambda: svc.near.live, 5, "tracking the new server")
        while (first := await client.get("/user/5")).headers["x-cache"] == "BYPASS":
            await asyncio.sleep(0.05)  # the breaker's period; redis-py's pool finds its dead sockets
        back = [first] + [await client.get("/user/5") for _ in range(2)]
    assert tiers(warm) == [None, "redis", "near"]
    assert {r.headers["x-cache"] for r in down} == {"BYPASS"} and svc.near.entries == 0
    assert [r.headers["x-cache"] for r in back] == ["MISS", "HIT", "HIT"]  # a new, empty server
    assert tiers(back) == [None, "redis", "near"]
    assert {r.content for r in back} == {warm[0].content}
    assert bypassed()[0] >= 3


async def test_a_hung_redis_ends_tracking_within_the_timeout(stack, redis_factory) -> None:
    server = redis_factory()
    env = {**stack.api_env(), "REDIS_HOST": server.host, "REDIS_PORT": str(server.port),
           "REDIS_TIMEOUT_S": "0.2"}
    timeouts = Delta(("cachetail_nearcache_resets_total", {"reason": "heartbeat"}))
    async with running(env) as (app, client):
        svc = app.state.services
        for _ in range(2):
            await client.get("/user/8")
        assert svc.near.entries == 1
        os.kill(server.proc.pid, signal.SIGSTOP)  # a silent partition looks the same
        try:
            took = await until(lambda: not svc.near.live, 2, "the heartbeat gave up")
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        assert svc.near.entries == 0
        await until(lambda: svc.near.live, 5, "tracking back")
    assert took < 0.2 + 0.1 + 0.3  # timeout + heartbeat interval + slack
    assert timeouts() == [1]


async def test_an_acl_without_client_commands_leaves_it_off_and_reads_working(
        stack, redis_factory, caplog: pytest.LogCaptureFixture) -> None:
    server = redis_factory(password="admin-pw")
    admin = redis.Redis(host=server.host, port=server.port, password="admin-pw")
    admin.acl_setuser("reader", enabled=True, passwords=["+reader-pw"], keys=["*"],
                      commands=["+@all", "-client"])
    env = {**stack.api_env(), "REDIS_HOST": server.host, "REDIS_PORT": str(server.port),
           "REDIS_USERNAME": "reader", "REDIS_PASSWORD": "reader-pw"}
    with caplog.at_level(logging.WARNING, logger="api"):
        async with running(env) as (app, client):
            answers = [await client.get("/user/14") for _ in range(3)]
            assert not app.state.services.near.live
    admin.close()
    assert [r.headers["x-cache"] for r in answers] == ["MISS", "HIT", "HIT"]
    assert tiers(answers) == [None, "redis", "redis"]
    assert "cannot establish tracking" in caplog.text and "NOPERM" in caplog.text
    assert "reader-pw" not in caplog.text


# ------------------------------------------------------------------ bounds


async def test_bounded_by_entries_least_recently_used_first(stack, redis_client) -> None:
    capacity = Delta(("cachetail_nearcache_evictions_total", {"reason": "capacity"}))
    async with running(stack.api_env(), NEARCACHE_MAX_ENTRIES="20") as (app, client):
        svc = app.state.services
        most = 0
        for user_id in range(100, 160):
            for _ in range(2):
                await client.get(f"/user/{user_id}")
            await client.get("/user/1")  # kept in use: never the least recent
            most = max(most, svc.near.entries)
        hot = await client.get("/user/1")
    assert most == 20 and svc.near.entries == 0  # emptied when the app stopped
    assert hot.headers["x-cache-tier"] == "near"
    assert capacity()[0] >= 60 - 19


async def test_bounded_by_bytes_and_large_values_skipped(stack, redis_client) -> None:
    redis_client.set(KEYS.user(700), b'{"id":700,"big":"' + b"x" * 5000 + b'"}')
    too_large = Delta(("cachetail_nearcache_fills_total", {"result": "too_large"}))
    async with running(stack.api_env(), NEARCACHE_MAX_BYTES="4096") as (app, client):
        svc = app.state.services
        most = 0
        for user_id in range(200, 230):
            for _ in range(2):
                await client.get(f"/user/{user_id}")
            most = max(most, svc.near.held_bytes)
        held = svc.near.entries
        big = [await client.get("/user/700") for _ in range(3)]
    assert 0 < most <= 4096 and 2 <= held < 30
    assert tiers(big) == ["redis"] * 3
    assert too_large() == [3]


def test_entry_overhead_covers_what_an_entry_really_costs() -> None:
    cache = NearCache(10**7, 10**12)
    cache.enable()
    keys = [KEYS.user(i) for i in range(20_000)]
    values = [b'{"id":%d,"name":"%s"}' % (i, b"n" * (i % 300)) for i in range(20_000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for key, value in zip(keys, values):
            ticket = cache.begin(key)
            assert ticket is not None
            cache.finish(ticket, value, 3_600_000)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        cache.close()
    accounted_overhead = ENTRY_OVERHEAD * len(keys)
    assert grown <= accounted_overhead  # keys and values were allocated before: overhead only
    assert grown > accounted_overhead * 0.6  # and not a wild overestimate


# ------------------------------------------------------------- settings


def test_the_tracking_prefix_covers_user_keys_only() -> None:
    prefix = Keyspace(prefix="ct").row_prefix("u")
    assert prefix == "ct:{u:" and KEYS.user(42).startswith(prefix)
    books = Keyspace.variant("p", (("category", "books"),))
    others = (KEYS.list_page("p"), KEYS.list_page(books), KEYS.list_generation("p"),
              KEYS.invalidator_position(), Keyspace(prefix="ct2").user(42), KEYS.row("user", "42"))
    assert not any(key.startswith(prefix) for key in others)


def test_settings_defaults_switches_and_errors(caplog: pytest.LogCaptureFixture) -> None:
    base = {"DB_USER": "cachetail_api"}
    default = ApiSettings.from_env(base)
    assert default.nearcache and default.near.max_entries == 100_000
    assert default.near.max_bytes == 64 * 1024 * 1024
    assert not ApiSettings.from_env({**base, "NEARCACHE": "0"}).nearcache
    assert ApiSettings.from_env({**base, "REDIS_CLUSTER": "1"}).nearcache  # on a cluster too
    off = ApiSettings.from_env({**base, "NEARCACHE": "false"})
    with caplog.at_level(logging.INFO, logger="api"):
        assert start_tracking(off, [KEYS.row_prefix("u")], LeanRedis(off.redis)) == (None, None)
    assert "near-cache off: NEARCACHE=false" in caplog.text
    for name, value in (("NEARCACHE", "maybe"), ("NEARCACHE_MAX_ENTRIES", "0"),
                        ("NEARCACHE_MAX_BYTES", "12"), ("NEARCACHE_MAX_BYTES", "1MB")):
        with pytest.raises(SettingsError) as caught:
            ApiSettings.from_env({**base, name: value})
        assert str(caught.value).startswith(f"{name}: expected")


@pytest.mark.redis_kinds("single", "cluster")
async def test_off_means_no_tracking_and_no_near_headers(stack, redis_client) -> None:
    async with running(stack.api_env(), NEARCACHE="false") as (app, client):
        answers = [await client.get("/user/31") for _ in range(3)]
        stats = (await client.get("/cache/stats")).json()
        assert app.state.services.near is None and tracking_clients(redis_client) == []
    assert tiers(answers) == [None, "redis", "redis"]
    assert stats["nearcache"]["enabled"] is False


# ----------------------------------------------------------- many workers


@pytest.mark.redis_kinds("single", "cluster")
def test_every_worker_is_invalidated(stack, db, redis_client, workers, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`python -m api --workers 2` and the invalidator: each worker keeps its own near-cache,
    and a write through MySQL or a clear reaches both."""
    worker = workers(stack.invalidator_env(), wait_streaming=False)  # starts beside the API
    metrics_dir = tmp_path / "prom-multiproc"
    metrics_dir.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DB_", "REDIS_", "CACHE_", "API_", "ADMIN_", "PROMETHEUS_", "NEAR"))}
    env.update(stack.api_env(), CACHE_KEY_PREFIX=worker.prefix,
               PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    name = f"Every Worker {worker.prefix}"
    with api_process(env, tmp_path, "--workers", "2") as (url, _):

        def stats() -> dict:  # type: ignore[type-arg]
            return httpx.get(url + "/cache/stats", timeout=5).json()["nearcache"]

        def read(user_id: int) -> httpx.Response:
            with httpx.Client(base_url=url, timeout=5) as fresh:  # new connections spread
                return fresh.get(f"/user/{user_id}")

        wait_for(lambda: stats()["workers_tracking"] == 2, what="both workers tracking")
        wait_for(lambda: worker.metric("cachetail_invalidator_streaming") == 1, 20, "the invalidator")
        with ThreadPoolExecutor(8) as pool:
            warm = list(pool.map(read, [1 + i % 10 for i in range(120)]))
            assert {r.status_code for r in warm} == {200}
            assert stats()["entries"] > 10  # ten ids, so both workers hold some
            with db.cursor() as cur:
                cur.execute("UPDATE users SET full_name = %s WHERE id = 7", (name,))
            wait_for(lambda: redis_client.exists(worker.keyspace.user(7)) == 0,
                     what="the invalidator's delete")
            time.sleep(0.05)  # the bound: announced to every worker well within this
            after = list(pool.map(read, [7] * 30))
            assert {r.json()["full_name"] for r in after} == {name}
            cleared = httpx.post(url + "/cache/clear", timeout=5,
                                 headers={"Authorization": f"Bearer {env['ADMIN_TOKEN']}"})
            assert cleared.status_code == 200
            time.sleep(0.05)
            assert stats()["entries"] == 0
        hits = stats()["hits"]
    assert hits > 50
    assert worker.stop() == 0
