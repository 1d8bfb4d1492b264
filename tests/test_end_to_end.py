"""The real API and the real invalidator together: what a user of the lab would check.

The API runs in-process (its fill seam lets a test put a commit at an exact
point), the invalidator as ``python -m invalidator``; both on the shared
MariaDB (binlog on) and Redis, with a key prefix of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import random

import pytest
from support.api import running
from support.stack import Stack
from support.waiting import wait_for_async


pytestmark = [pytest.mark.anyio, pytest.mark.redis_kinds("single", "cluster")]


@pytest.fixture(autouse=True)
def _near_on_and_off(nearcache: str) -> str:
    """Every test here runs with the near-cache on and with it off."""
    return nearcache


async def eventually(read, expect, timeout_s: float = 5.0):
    """Poll ``read()`` until ``expect(result)``; that result."""

    async def expected():
        result = await read()
        return result if expect(result) else None

    return await wait_for_async(expected, timeout_s, "the expected answer")


async def test_changes_reach_readers_through_the_api(stack: Stack, db, redis_client, workers) -> None:
    worker = workers(stack.invalidator_env())
    changed = f"Changed In SQL {worker.prefix}"  # new on every run (the session shares MariaDB)
    async with running(stack.api_env(), CACHE_KEY_PREFIX=worker.prefix) as (_, client):
        with db.cursor() as cur:
            # A cached row, then an UPDATE: the next read has the new row.
            first = await client.get("/user/321")
            assert (await client.get("/user/321")).headers["x-cache"] == "HIT"
            cur.execute("UPDATE users SET full_name = %s WHERE id = 321", (changed,))
            after = await eventually(lambda: client.get("/user/321"),
                                     lambda r: r.json()["full_name"] == changed)
            assert after.json()["full_name"] == changed != first.json()["full_name"]

            # DELETE -> 404, then INSERT of that id after the 404 was cached -> 200.
            cur.execute("INSERT INTO users (username, email, full_name) VALUES ('e2e', 'e@x', 'E')")
            new_id = cur.lastrowid
            assert (await client.get(f"/user/{new_id}")).status_code == 200
            cur.execute("DELETE FROM users WHERE id = %s", (new_id,))
            # The INSERT's own delete may land after a read stored the row, and the DELETE's
            # after a read stored the 404 (both rightly): wait for the 404 to stay cached.
            gone = await eventually(lambda: client.get(f"/user/{new_id}"),
                                    lambda r: (r.status_code, r.headers["x-cache"]) == (404, "HIT"))
            assert (gone.status_code, gone.headers["x-cache"]) == (404, "HIT")  # a cached 404
            cur.execute("INSERT INTO users (id, username, email, full_name) VALUES (%s, 'e2e', 'e@x', 'Back')",
                        (new_id,))
            back = await eventually(lambda: client.get(f"/user/{new_id}"), lambda r: r.status_code == 200)
            assert back.json()["full_name"] == "Back"
            cur.execute("DELETE FROM users WHERE id = %s", (new_id,))

            # A product change reaches the list variants it is in, and only those.
            variants = ["/products", "/products?category=books", "/products?category=toys"]
            for path in variants:
                await client.get(path)
                assert (await client.get(path)).headers["x-cache"] == "HIT"
            cur.execute("SELECT id, category FROM products WHERE category = 'books' ORDER BY id LIMIT 1")
            book_id, _ = cur.fetchone()
            price = f"{random.randint(10_000, 99_999)}.{random.randint(10, 99)}"  # a real change
            cur.execute("UPDATE products SET price = %s WHERE id = %s", (price, book_id))

            def has_new_price(r) -> bool:
                return any(p["id"] == book_id and p["price"] == price for p in r.json())

            for path in variants[:2]:
                fresh = await eventually(lambda p=path: client.get(p), has_new_price)
                assert has_new_price(fresh), path
            toys = await client.get("/products?category=toys")
            assert toys.headers["x-cache"] == "HIT"  # no toy changed: still warm
            assert not has_new_price(toys)
    assert worker.stop() == 0


async def test_the_invalidators_delete_defeats_a_racing_fill(stack: Stack, db, redis_client,
                                                             workers) -> None:
    """A reader SELECTs the old row; the write commits and the real invalidator acts
    before the fill stores: the stale row must not be stored."""
    worker = workers(stack.invalidator_env())
    key = worker.keyspace.user(654)
    with db.cursor() as cur:
        cur.execute("UPDATE users SET full_name = 'Old Name' WHERE id = 654")
    # Let the worker apply that first change, so only the racing one is in flight.
    await wait_for_async(lambda: worker.metric("cachetail_invalidator_transactions_total") >= 1,
                         what="first change")

    async def write_and_let_the_invalidator_act(filled_key: str) -> None:
        lease = redis_client.get(filled_key)
        with db.cursor() as cur:
            cur.execute("UPDATE users SET full_name = 'New Name' WHERE id = 654")
        await wait_for_async(lambda: redis_client.get(filled_key) != lease, what="the invalidator voided the lease")

    async with running(stack.api_env(), CACHE_KEY_PREFIX=worker.prefix,
                       after_select=write_and_let_the_invalidator_act) as (app, client):
        racing = await client.get("/user/654")
        assert racing.json()["full_name"] == "Old Name"  # true when it was read...
        assert redis_client.get(key) is None  # ...and not stored over the newer row
        app.state.services.cache._after_select = None
        fresh = await client.get("/user/654")
        assert (fresh.headers["x-cache"], fresh.json()["full_name"]) == ("MISS", "New Name")
        assert (await client.get("/user/654")).headers["x-cache"] == "HIT"
    assert worker.stop() == 0


async def test_refresh_mode_serves_the_new_row_as_a_hit(stack: Stack, db, redis_client, workers) -> None:
    worker = workers(stack.invalidator_env(), INVALIDATOR_MODE="refresh")
    async with running(stack.api_env(), CACHE_KEY_PREFIX=worker.prefix) as (_, client):
        await client.get("/user/777")
        with db.cursor() as cur:
            cur.execute("UPDATE users SET email = 'refreshed@example.com' WHERE id = 777")
        fresh = await eventually(lambda: client.get("/user/777"),
                                 lambda r: r.json()["email"] == "refreshed@example.com")
        assert fresh.json()["email"] == "refreshed@example.com"
        assert fresh.headers["x-cache"] == "HIT"  # the invalidator stored it: no miss at all
        nocache = await client.get("/user/777/nocache")
        assert nocache.content == fresh.content  # byte for byte what a cold read serves
    assert worker.stop() == 0


async def test_four_workers_racing_fills_never_store_the_old_row(stack: Stack, db, redis_client,
                                                                 workers) -> None:
    """Four API instances (each with its own single-flight, as four processes have) read one
    cold id at once.  The first holds the lease and is stopped after its SELECT; the row
    changes and the invalidator voids the lease; the other three, waiting on that lease,
    see it vanish and read the new row; the first answers its old row and stores nothing."""
    worker = workers(stack.invalidator_env())
    key = worker.keyspace.user(655)
    with db.cursor() as cur:
        cur.execute("UPDATE users SET full_name = 'Before' WHERE id = 655")
    await wait_for_async(lambda: worker.metric("cachetail_invalidator_transactions_total") >= 1,
                         what="first change")
    selected, go_on = asyncio.Event(), asyncio.Event()

    async def hold(filled_key: str) -> None:
        selected.set()
        await go_on.wait()

    env = {**stack.api_env(), "CACHE_KEY_PREFIX": worker.prefix, "CACHE_LEASE_WAIT_MS": "5000"}
    async with contextlib.AsyncExitStack() as apps:
        first = (await apps.enter_async_context(running(env, after_select=hold)))[1]
        others = [(await apps.enter_async_context(running(env)))[1] for _ in range(3)]
        racing = asyncio.create_task(first.get("/user/655"))
        await asyncio.wait_for(selected.wait(), 10)
        lease = redis_client.get(key)
        waiting = [asyncio.create_task(c.get("/user/655")) for c in others]
        await asyncio.sleep(0.2)  # the three are polling the first one's lease
        assert not any(t.done() for t in waiting)
        with db.cursor() as cur:
            cur.execute("UPDATE users SET full_name = 'After' WHERE id = 655")
        await wait_for_async(lambda: redis_client.get(key) != lease, what="the invalidator voided the lease")
        answers = await asyncio.wait_for(asyncio.gather(*waiting), 10)
        assert [a.json()["full_name"] for a in answers] == ["After"] * 3
        go_on.set()
        assert (await racing).json()["full_name"] == "Before"  # true when it was read
        stored = redis_client.get(key)
        assert stored is None or b'"After"' in stored  # never the old row
        for client in [first, *others]:
            assert (await client.get("/user/655")).json()["full_name"] == "After"
    assert worker.stop() == 0
