"""The read endpoints against real MariaDB and Redis: bodies, X-Cache, the fill protocol."""

from __future__ import annotations

import asyncio
import datetime
import json
import time

import pymysql
import pytest

from cachetail.keyspace import LEASE, NEGATIVE, Keyspace
from support.api import Delta, fills, running, selects
from support.lab import products_generation, products_page

pytestmark = [pytest.mark.anyio, pytest.mark.redis_kinds("single", "cluster")]
KEYS = Keyspace()


@pytest.fixture(autouse=True)
def _near_on_and_off(nearcache: str) -> str:
    """Every test here runs with the near-cache on and with it off."""
    return nearcache


def user_from_db(db: pymysql.connections.Connection, user_id: int) -> dict[str, object]:
    with db.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute("SELECT * FROM users WHERE id = %s", (user_id,))
        row = cur.fetchone()
    assert row is not None
    return row


async def test_user_miss_then_hit_serves_the_stored_bytes(stack, redis_client, db) -> None:
    async with running(stack.api_env()) as (_, client):
        first = await client.get("/user/42")
        second = await client.get("/user/42")
        nocache = await client.get("/user/42/nocache")
    assert (first.status_code, first.headers["x-cache"]) == (200, "MISS")
    assert (second.status_code, second.headers["x-cache"]) == (200, "HIT")
    assert second.headers["content-type"] == "application/json"
    assert first.content == second.content == nocache.content
    assert redis_client.get(KEYS.user(42)) == second.content
    assert 3500 < redis_client.ttl(KEYS.user(42)) <= 3600
    body = json.loads(first.content)
    row = user_from_db(db, 42)
    assert set(body) == set(row)
    assert body["username"] == row["username"] and body["id"] == 42
    created = row["created_at"]
    assert isinstance(created, datetime.datetime)
    assert body["created_at"] == created.isoformat() + "Z"


async def test_hit_returns_stored_bytes_untouched(stack, redis_client) -> None:
    odd = b'{"id": 7,   "note": "not re-encoded"}'
    redis_client.set(KEYS.user(7), odd)
    async with running(stack.api_env()) as (_, client):
        response = await client.get("/user/7")
    assert response.headers["x-cache"] == "HIT"
    assert response.content == odd


async def test_missing_user_is_404_and_cached_negative(stack, redis_client) -> None:
    async with running(stack.api_env()) as (_, client):
        first = await client.get("/user/4000000000")
        second = await client.get("/user/4000000000")
    assert (first.status_code, first.headers["x-cache"]) == (404, "MISS")
    assert (second.status_code, second.headers["x-cache"]) == (404, "HIT")
    assert first.json()["error"] == "not_found"
    assert redis_client.get(KEYS.user(4000000000)) == NEGATIVE
    assert 0 < redis_client.ttl(KEYS.user(4000000000)) <= 30


async def test_products_ordered_decimal_and_variants_cached(stack, redis_client, db) -> None:
    with db.cursor() as cur:
        cur.execute("SELECT category, COUNT(*) FROM products GROUP BY category ORDER BY 2 DESC")
        category, count = cur.fetchone()
    async with running(stack.api_env()) as (_, client):
        everything = await client.get("/products")
        again = await client.get("/products")
        one = await client.get("/products", params={"category": category})
        one_again = await client.get("/products", params={"category": category})
        none = await client.get("/products", params={"category": "no such category"})
        none_again = await client.get("/products", params={"category": "no such category"})
        redis_client.incr(products_generation(KEYS, db))  # what the invalidator does on a change
        after_change = await client.get("/products")
    products = everything.json()
    assert len(products) == 1000
    assert [p["id"] for p in products] == sorted(p["id"] for p in products)
    assert all(isinstance(p["price"], str) and "." in p["price"] for p in products)
    assert [r.headers["x-cache"] for r in (everything, again, one, one_again, none, none_again)] \
        == ["MISS", "HIT", "MISS", "HIT", "MISS", "HIT"]
    assert again.content == everything.content
    assert len(one.json()) == count and {p["category"] for p in one.json()} == {category}
    assert none.json() == [] and none_again.status_code == 200
    assert after_change.headers["x-cache"] == "MISS"
    assert after_change.content == everything.content


@pytest.mark.parametrize("path", ["/user/77", "/products"])
async def test_concurrent_cold_reads_cost_one_select(stack, redis_client, path) -> None:
    entity = "user" if path.startswith("/user") else "products"
    delta = Delta(selects(entity), fills(entity, "stored"), fills(entity, "waited"),
                  fills(entity, "uncached"))
    async with running(stack.api_env()) as (_, client):
        responses = await asyncio.gather(*(client.get(path) for _ in range(200)))
    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1
    # One SELECT, one store, and nobody polled Redis for it: the 199 others shared
    # the in-process fill rather than waiting on its lease like another process would.
    assert delta() == [1, 1, 0, 0]


async def test_fills_survive_a_flushed_script_cache(stack, redis_client) -> None:
    """As after a Redis restart or failover: the fills' EVALSHAs meet NOSCRIPT, run the
    script once by EVAL, and every later fill finds it loaded again."""
    async with running(stack.api_env()) as (_, client):
        assert (await client.get("/user/31")).headers["x-cache"] == "MISS"  # the scripts loaded
        redis_client.script_flush()
        delta = Delta(fills("user", "stored"), fills("products", "stored"))
        first = [await client.get(path) for path in ("/user/32", "/products")]
        second = [await client.get(path) for path in ("/user/32", "/products")]
        third = await client.get("/user/33")
    assert [r.headers["x-cache"] for r in first] == ["MISS", "MISS"]
    assert [r.headers["x-cache"] for r in second] == ["HIT", "HIT"]
    assert third.headers["x-cache"] == "MISS"
    assert delta() == [2, 1]
    assert redis_client.get(KEYS.user(32)) == second[0].content


async def test_stale_user_fill_is_not_stored(stack, redis_client, db) -> None:
    """A write and its invalidation between the fill's SELECT and its store."""
    key = KEYS.user(123)
    with db.cursor() as cur:
        cur.execute("UPDATE users SET full_name = 'Before Write' WHERE id = 123")

    async def invalidate_after_select(filled_key: str) -> None:
        with db.cursor() as cur:
            cur.execute("UPDATE users SET full_name = 'After Write' WHERE id = 123")
        redis_client.delete(filled_key)  # the invalidator's DEL for that commit

    delta = Delta(fills("user", "stale_prevented"), fills("user", "stored"))
    async with running(stack.api_env(), after_select=invalidate_after_select) as (app, client):
        racing = await client.get("/user/123")
        assert racing.json()["full_name"] == "Before Write"  # it answers what it read...
        assert redis_client.get(key) is None  # ...but never stored it
        assert delta() == [1, 0]
        app.state.services.cache._after_select = None
        fresh = await client.get("/user/123")
    assert (fresh.headers["x-cache"], fresh.json()["full_name"]) == ("MISS", "After Write")
    assert json.loads(redis_client.get(key))["full_name"] == "After Write"


async def test_stale_products_fill_is_not_stored(stack, redis_client, db) -> None:
    key = products_page(KEYS, db, "books")
    with db.cursor() as cur:
        cur.execute("UPDATE products SET category = 'books', price = 1.00 WHERE id = 5")

    async def invalidate_after_select(filled_key: str) -> None:
        with db.cursor() as cur:
            cur.execute("UPDATE products SET price = 2.00 WHERE id = 5")
        redis_client.incr(products_generation(KEYS, db, "books"))

    delta = Delta(fills("products", "stale_prevented"))
    async with running(stack.api_env(), after_select=invalidate_after_select) as (app, client):
        racing = await client.get("/products", params={"category": "books"})
        assert redis_client.get(key) is None
        app.state.services.cache._after_select = None
        fresh = await client.get("/products", params={"category": "books"})
    old = {p["id"]: p["price"] for p in racing.json()}
    new = {p["id"]: p["price"] for p in fresh.json()}
    assert (old[5], new[5]) == ("1.00", "2.00")
    assert delta() == [1]
    assert fresh.headers["x-cache"] == "MISS"


async def test_another_process_lease_waits_then_reads_uncached(stack, redis_client) -> None:
    key, other = KEYS.user(300), LEASE + b"another-process"
    redis_client.set(key, other, px=10_000)
    delta = Delta(fills("user", "uncached"), selects("user"))
    async with running(stack.api_env(), CACHE_LEASE_WAIT_MS="150") as (_, client):
        started = time.monotonic()
        response = await client.get("/user/300")
        elapsed = time.monotonic() - started
    assert (response.status_code, response.json()["id"]) == (200, 300)
    assert 0.14 <= elapsed < 1.0
    assert redis_client.get(key) == other  # the other fill's lease is left alone
    assert delta() == [1, 1]


async def test_another_process_fill_arrives_while_waiting(stack, redis_client) -> None:
    key = KEYS.user(301)
    redis_client.set(key, LEASE + b"another-process", px=10_000)
    theirs = b'{"id":301,"stored_by":"the other process"}'
    delta = Delta(fills("user", "waited"), selects("user"))

    async def other_process_stores() -> None:
        await asyncio.sleep(0.05)  # the other process stores while this read waits on its lease
        redis_client.set(key, theirs)

    async with running(stack.api_env(), CACHE_LEASE_WAIT_MS="1000") as (_, client):
        response, _ = await asyncio.gather(client.get("/user/301"), other_process_stores())
    assert response.content == theirs
    assert delta() == [1, 0]


async def test_clear_needs_the_token_and_removes_only_cache_entries(stack, redis_client, db) -> None:
    redis_client.set("someone-else:key", b"keep me")
    redis_client.set(products_generation(KEYS, db), 7)
    redis_client.set(KEYS.invalidator_position(), b'{"file": "binlog.000001", "pos": 4}')
    env = stack.api_env()
    async with running(env) as (_, client):
        for user_id in (1, 2, 3):
            await client.get(f"/user/{user_id}")
        await client.get("/products")
        ours = len(list(redis_client.scan_iter(match="ct:*"))) - 2  # minus gen and position
        stats = (await client.get("/cache/stats")).json()
        no_header = await client.post("/cache/clear")
        wrong = await client.post("/cache/clear", headers={"Authorization": "Bearer nope"})
        basic = await client.post("/cache/clear",
                                  headers={"Authorization": f"Basic {env['ADMIN_TOKEN']}"})
        assert len(list(redis_client.scan_iter(match="ct:*"))) == ours + 2
        right = await client.post("/cache/clear",
                                  headers={"Authorization": f"Bearer {env['ADMIN_TOKEN']}"})
    assert ours == 4 and stats["redis"]["keys"] == ours
    assert no_header.status_code == 401 and no_header.headers["www-authenticate"].startswith("Bearer")
    assert (wrong.status_code, basic.status_code) == (403, 403)
    assert right.status_code == 200 and right.json() == {"removed": ours}
    assert sorted(redis_client.scan_iter(match="ct:*")) == sorted(
        [products_generation(KEYS, db).encode(), KEYS.invalidator_position().encode()])
    assert redis_client.get(products_generation(KEYS, db)) == b"7"  # never reset: see keyspace.is_state
    assert redis_client.get("someone-else:key") == b"keep me"


async def test_clear_disabled_without_admin_token(stack, redis_client) -> None:
    async with running(stack.api_env(), ADMIN_TOKEN="") as (_, client):
        await client.get("/user/1")
        response = await client.post("/cache/clear", headers={"Authorization": "Bearer "})
    assert response.status_code == 403 and response.json()["error"] == "disabled"
    assert redis_client.exists(KEYS.user(1)) == 1


async def test_stats_counts_hits_misses_and_redis_figures(stack, redis_client) -> None:
    async with running(stack.api_env()) as (_, client):
        before = (await client.get("/cache/stats")).json()
        for _ in range(3):
            await client.get("/user/11")
        await client.get("/products")
        after = (await client.get("/cache/stats")).json()
    assert after["hits"] - before["hits"] == 2
    assert after["misses"] - before["misses"] == 2
    assert 0 < after["hit_rate"] < 1
    assert after["redis"]["state"] == "ok"
    assert after["redis"]["keys"] == 2 and after["redis"]["keys_complete"] is True
    assert after["redis"]["keyspace_hits"] >= 2 and after["redis"]["used_memory"] > 0


async def test_health_ok(stack, redis_client) -> None:
    async with running(stack.api_env()) as (_, client):
        response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "mysql": {"state": "ok"}, "redis": {"state": "ok"}}



async def test_invalidated_foreign_lease_ends_the_wait_early(stack, redis_client) -> None:
    key = KEYS.user(302)
    redis_client.set(key, LEASE + b"another-process", px=10_000)
    delta = Delta(fills("user", "uncached"))

    async def invalidator_deletes() -> None:
        await asyncio.sleep(0.05)  # the invalidator deletes while this read waits on the lease
        redis_client.delete(key)

    async with running(stack.api_env(), CACHE_LEASE_WAIT_MS="2000") as (_, client):
        started = time.monotonic()
        response, _ = await asyncio.gather(client.get("/user/302"), invalidator_deletes())
        elapsed = time.monotonic() - started
    assert (response.status_code, response.json()["id"]) == (200, 302)
    assert elapsed < 1.0  # it did not sit out the whole 2 s wait for a value that cannot come
    assert redis_client.get(key) is None  # and it did not store without a lease
    assert delta() == [1]
