"""The near-cache's bounds (api/nearcache.py): entries, bytes, the cost an entry is
accounted for."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import httpx
import pytest

from api.nearcache import ENTRY_OVERHEAD, NearCache
from cachetail.keyspace import Keyspace
from support.api import Delta, running
from support.nearcache import tiers

pytestmark = pytest.mark.anyio
KEYS = Keyspace()


# ------------------------------------------------------------------ bounds


async def most_held(client: httpx.AsyncClient, ids: range, held: Callable[[], int],
                    between: str | None = None) -> int:
    """Read each id twice (kept, then served from memory), and ``between`` after each: the
    most ``held`` reached on the way."""
    most = 0
    for user_id in ids:
        for _ in range(2):
            await client.get(f"/user/{user_id}")
        if between is not None:
            await client.get(between)
        most = max(most, held())
    return most


async def test_bounded_by_entries_least_recently_used_first(stack, redis_client) -> None:
    capacity = Delta(("cachetail_nearcache_evictions_total", {"reason": "capacity"}))
    async with running(stack.api_env(), NEARCACHE_MAX_ENTRIES="20") as (app, client):
        svc = app.state.services
        # /user/1 read after each: kept in use, never the least recent
        most = await most_held(client, range(100, 160), lambda: svc.near.entries, between="/user/1")
        hot = await client.get("/user/1")
    assert most == 20 and svc.near.entries == 0  # emptied when the app stopped
    assert hot.headers["x-cache-tier"] == "near"
    assert capacity()[0] >= 60 - 19


async def test_bounded_by_bytes_and_large_values_skipped(stack, redis_client) -> None:
    redis_client.set(KEYS.user(700), b'{"id":700,"big":"' + b"x" * 5000 + b'"}')
    too_large = Delta(("cachetail_nearcache_fills_total", {"result": "too_large"}))
    async with running(stack.api_env(), NEARCACHE_MAX_BYTES="4096") as (app, client):
        svc = app.state.services
        most = await most_held(client, range(200, 230), lambda: svc.near.held_bytes)
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
        for key, value in zip(keys, values, strict=True):
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
