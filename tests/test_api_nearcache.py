"""The near-cache (api/nearcache.py, api/tracking.py) against real Redis and MariaDB:
served from the worker's memory, dropped by every kind of change Redis announces, and its
settings.  Outages: test_api_nearcache_outages.py; bounds: test_api_nearcache_bounds.py."""

from __future__ import annotations

import asyncio
import logging

import pytest

from api.nearcache import NearCache
from api.settings import ApiSettings, SettingsError
from api.lean import LeanRedis
from api.services import start_tracking
from cachetail.keyspace import LEASE, NEGATIVE, Keyspace
from support.api import Delta, running
from support.nearcache import get_calls, near, primaries, tiers, tracking_clients
from support.waiting import wait_for_async

pytestmark = pytest.mark.anyio
KEYS = Keyspace()


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
                await wait_for_async(lambda: lost() == [1], 2, "the loss noticed")
            await svc.tracker.sync()  # the invalidation has been applied

        svc.cache.after_tracked_read = change_between_reply_and_store
        racing = await client.get("/user/51")
        svc.cache.after_tracked_read = None
        assert racing.content == old  # it answers what it read...
        assert key not in svc.near  # ...and does not keep it
        await wait_for_async(lambda: svc.near.live, 3, "tracking back")
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
        await wait_for_async(lambda: redis_client.exists(key) == 0, what="the invalidator's delete")
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
        await asyncio.sleep(0.45)  # the subject: the 400 ms TTL passes with nothing announced
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
