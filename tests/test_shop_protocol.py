"""The protocol on the second declaration: the shop (examples/shop.toml on sql/examples/shop.sql).

A VARCHAR key under a case-insensitive collation, a composite key, a BINARY(16) UUID key,
paged lists with exact and collation-weighted filters; the real API in-process and the real
invalidator as a process, on one node and on a cluster: the forced stale-fill race, one
SELECT per stampede, refresh bytes identical to a cold read, the collation trap, a key that
changes, per-variant list invalidation, the near-cache and Redis going away.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal

import pytest

from cachetail.devstack import MariaDB
from cachetail.keyspace import Keyspace
from support.api import Delta, running, selects
from support.shop import UUID1, cold_bytes, customer_of, on_shop, one, order_path, run, settled, worker_on_shop
from support.stack import Stack
from support.waiting import wait_for_async

pytestmark = [pytest.mark.anyio, pytest.mark.redis_kinds("single", "cluster")]
RUNS = itertools.count(1)


@pytest.fixture(autouse=True)
def _near(nearcache: str) -> str:
    return nearcache


# -------------------------------------------------------------------- serving


async def test_every_shop_route_serves_and_caches(stack: Stack, shop: MariaDB, redis_client) -> None:
    async with running(on_shop(stack.api_env(), shop)) as (_, client):
        for path in ("/customers/C00042", order_path(100038), f"/gift-cards/{UUID1}"):
            first, second = await client.get(path), await client.get(path)
            assert (first.status_code, first.headers["x-cache"]) == (200, "MISS"), (path, first.text)
            assert (second.headers["x-cache"], second.content) == ("HIT", first.content), path
        # the UUID in its other spelling is the same key: a hit
        hexed = await client.get("/gift-cards/" + UUID1.replace("-", "").upper())
        assert hexed.headers["x-cache"] == "HIT"
        assert json.loads(hexed.content)["id"] == UUID1
        # a paged list: a full page names the next; the cursor's page is cached too
        page = await client.get("/order-lines", params={"order": "100050"})
        assert page.status_code == 200 and len(page.json()) == 50
        link = page.headers["link"]
        assert link.endswith('>; rel="next"') and "after=" in link
        nxt = await client.get(link[1:link.index(">")])
        again = await client.get(link[1:link.index(">")])
        assert [r.headers["x-cache"] for r in (nxt, again)] == ["MISS", "HIT"]
        lines = [(x["order_id"], x["line_no"]) for x in page.json() + nxt.json()]
        assert lines == sorted(lines) and len(set(lines)) == 100
        # collation-weighted filters: DE and de, Packed and packed share a variant
        de, upper = await client.get("/customers?country=de"), await client.get("/customers?country=DE")
        assert (de.headers["x-cache"], upper.headers["x-cache"], upper.content) == ("MISS", "HIT", de.content)
        assert {c["country"] for c in de.json()} >= {"DE", "de"}
        bad = await client.get("/order-lines", params={"order": "x"})
        assert (bad.status_code, bad.json()["error"]) == (400, "invalid_order")
        missing = await client.get("/customers/NOPE-NOPE")
        assert missing.status_code == 404 and missing.json()["detail"] == "no customer with code NOPE-NOPE"
        spec = (await client.get("/openapi.json")).json()  # generated from the declaration
        assert {"/customers/{code}", "/orders/{customer_id}/{order_id}", "/gift-cards/{id}", "/order-lines",
                "/orders", "/customers"} <= set(spec["paths"])
        lines = spec["paths"]["/order-lines"]["get"]
        assert [p["name"] for p in lines["parameters"]] == ["order", "status", "after", "Cachetail-Min-GTID"]
        assert "Link" in lines["responses"]["200"]["headers"]
        assert spec["components"]["schemas"]["gift_card"]["properties"]["id"] == {"type": "string", "format": "uuid"}


async def test_one_select_per_stampede(stack: Stack, shop: MariaDB, redis_client) -> None:
    """Three API instances (three single-flights, as three processes) and 60 cold readers of
    one customer: the lease lets one SELECT through."""
    env = on_shop(stack.api_env(), shop, CACHE_LEASE_WAIT_MS="5000")
    delta = Delta(selects("customer"))
    async with contextlib.AsyncExitStack() as apps:
        clients = [(await apps.enter_async_context(running(env)))[1] for _ in range(3)]
        answers = await asyncio.gather(*(clients[i % 3].get("/customers/C00077") for i in range(60)))
    assert {a.status_code for a in answers} == {200} and len({a.content for a in answers}) == 1
    assert delta() == [1]


# ------------------------------------------------------------ the stale-fill race


@pytest.mark.parametrize(("path", "write"), [
    ("/customers/C00101", "UPDATE customers SET name = CONCAT(name, '!') WHERE code = 'C00101'"),
    (order_path(100102), "UPDATE orders SET total = total + 1 WHERE order_id = 100102"),
    ("/gift-cards/5ca1ab1e-0000-4000-8000-000000000003",
     "UPDATE gift_cards SET balance = balance - 1 WHERE id = UNHEX('5ca1ab1e000040008000000000000003')"),
    ("/order-lines?order=100100", "UPDATE order_lines SET quantity = quantity + 1 WHERE order_id = 100100"
                                  " AND line_no = 1"),
])
async def test_a_fill_that_read_before_a_write_is_never_stored(
        stack: Stack, shop: MariaDB, redis_client, sdb, workers, path: str, write: str) -> None:
    w = worker_on_shop(stack, shop, workers)
    seen: list[str] = []

    async def write_and_let_the_invalidator_act(filled_key: str) -> None:
        seen.append(filled_key)
        marker = redis_client.mget(filled_key, *_generation(filled_key))
        run(sdb, write)
        await wait_for_async(lambda: redis_client.mget(filled_key, *_generation(filled_key)) != marker,
                             what="the invalidator voided the lease or moved the generation")

    async with running(on_shop(stack.api_env(), shop, CACHE_KEY_PREFIX=w.prefix),
                       after_select=write_and_let_the_invalidator_act) as (app, client):
        racing = await client.get(path)
        app.state.services.cache._after_select = None
        fresh = await client.get(path)
        again = await client.get(path)
    assert racing.status_code == fresh.status_code == 200
    assert racing.content != fresh.content  # the racing fill read the row before the write
    assert fresh.headers["x-cache"] == "MISS"  # ...and stored nothing
    assert (again.headers["x-cache"], again.content) == ("HIT", fresh.content)
    assert seen and seen[0].startswith(w.prefix + ":{")


def _generation(page_key: str) -> list[str]:
    """A list page's generation key (same hash tag); none for an entity row."""
    if "}:" not in page_key:
        return []
    return [page_key[:page_key.index("}:") + 2] + "gen"]


# ------------------------------------------------------- refresh and invalidation


async def test_refresh_writes_the_bytes_a_cold_read_serves(
        stack: Stack, shop: MariaDB, redis_client, sdb, workers) -> None:
    w = worker_on_shop(stack, shop, workers, INVALIDATOR_MODE="refresh")
    ks = Keyspace(prefix=w.prefix)
    n = next(RUNS)  # every run changes the rows again (the session's shop server is shared)
    cases = [
        ("customer", "/customers/C00200", ks.row("c", "C00200"), "code = %s", ("C00200",),
         f"UPDATE customers SET name = 'Zoë 🚀 Refreshed {n}', balance = balance + 0.05,"
         " preferences = '{\"lang\": \"fr\", \"n\": [1, 2.50]}', tags = 'vip,beta' WHERE code = 'C00200'"),
        ("order", order_path(100201), ks.row("o", f"{customer_of(100201)}:100201"), "order_id = %s", (100201,),
         f"UPDATE orders SET status = 'Shipped', shipped_at = '2025-06-0{1 + n % 9} 10:00:00.123'"
         " WHERE order_id = 100201"),
        ("gift_card", "/gift-cards/5ca1ab1e-0000-4000-8000-000000000005",
         ks.row("g", "5ca1ab1e000040008000000000000005"), "id = UNHEX(%s)", ("5ca1ab1e000040008000000000000005",),
         f"UPDATE gift_cards SET flags = {n % 256}, message = NULL"
         " WHERE id = UNHEX('5ca1ab1e000040008000000000000005')"),
    ]
    async with running(on_shop(stack.api_env(), shop, CACHE_KEY_PREFIX=w.prefix)) as (app, client):
        for _, path, *_ in cases:
            assert (await client.get(path)).status_code == 200
        for entity, path, key, where, args, write in cases:
            before = redis_client.get(key)
            run(sdb, write)
            await wait_for_async(lambda k=key, b=before: redis_client.get(k) not in (None, b),
                                 what=f"{entity} refreshed")
            assert redis_client.get(key) == cold_bytes(shop, entity, where, *args)
            await settled(app)
            hit = await client.get(path)
            assert hit.headers["x-cache"] == "HIT" and hit.content == redis_client.get(key)


async def test_the_collation_trap_is_closed(stack: Stack, shop: MariaDB, redis_client, sdb, workers) -> None:
    """Under utf8mb4_unicode_ci, c00300 and 'C00300 ' find the row C00300.  Only C00300 is
    ever stored (the invalidator names only that), and no 404 of a code is cached."""
    w = worker_on_shop(stack, shop, workers)
    ks = Keyspace(prefix=w.prefix)
    async with running(on_shop(stack.api_env(), shop, CACHE_KEY_PREFIX=w.prefix)) as (app, client):
        for spelling in ("c00300", "C00300%20", "c00300"):
            other = await client.get(f"/customers/{spelling}")
            assert (other.status_code, other.headers["x-cache"]) == (200, "MISS"), spelling
            assert other.headers["content-location"] == "/customers/C00300"
            assert other.json()["code"] == "C00300"
        assert list(redis_client.scan_iter(match=ks.row_prefix("c") + "*")) == []  # no copy, no lease
        own = [await client.get("/customers/C00300") for _ in range(2)]
        assert [r.headers["x-cache"] for r in own] == ["MISS", "HIT"]
        assert "content-location" not in own[0].headers
        n = next(RUNS)
        gone = [await client.get(f"/customers/new-{n}") for _ in range(2)]
        assert [r.status_code for r in gone] == [404, 404]
        assert [r.headers["x-cache"] for r in gone] == ["MISS", "MISS"]  # not cached
        run(sdb, "INSERT INTO customers (id, code, name, country, created_at) VALUES"
                 " (%s, %s, 'Late', 'fr', '2025-01-01')", 9000 + n, f"NEW-{n}")
        found = await client.get(f"/customers/new-{n}")
        assert (found.status_code, found.json()["code"]) == (200, f"NEW-{n}")
        run(sdb, "UPDATE customers SET name = %s WHERE code = 'C00300'", f"Renamed {n}")
        await wait_for_async(lambda: not redis_client.exists(ks.row("c", "C00300")), what="its own key invalidated")
        await settled(app)
        assert (await client.get("/customers/C00300")).json()["name"] == f"Renamed {n}"


async def test_a_key_that_changes_invalidates_the_old_and_the_new(
        stack: Stack, shop: MariaDB, redis_client, sdb, workers) -> None:
    w = worker_on_shop(stack, shop, workers)
    async with running(on_shop(stack.api_env(), shop, CACHE_KEY_PREFIX=w.prefix)) as (_, client):
        c = customer_of(100310)
        old, new = f"/orders/{c}/100310", f"/orders/{c}/990310"
        assert (await client.get(old)).status_code == 200
        assert [(await client.get(new)).headers["x-cache"] for _ in range(2)] == ["MISS", "HIT"]  # a cached 404
        run(sdb, "UPDATE orders SET order_id = 990310 WHERE order_id = 100310")
        ks = Keyspace(prefix=w.prefix)
        await wait_for_async(lambda: not redis_client.exists(ks.row("o", f"{c}:100310"), ks.row("o", f"{c}:990310")),
                             what="both keys invalidated")
        assert (await client.get(old)).status_code == 404
        moved = await client.get(new)
        assert (moved.status_code, moved.json()["order_id"]) == (200, 990310)
    run(sdb, "UPDATE orders SET order_id = 100310 WHERE order_id = 990310")


async def test_a_row_change_invalidates_only_the_variants_it_is_in(
        stack: Stack, shop: MariaDB, redis_client, sdb, workers) -> None:
    w = worker_on_shop(stack, shop, workers)
    mine = one(sdb, "SELECT order_id, status FROM order_lines WHERE order_id = 100400 AND line_no = 1")
    variants = {"mine": {"order": "100400"}, "mine+status": {"order": "100400", "status": mine["status"].upper()},
                "other": {"order": "100401"}, "all": {}}
    async with running(on_shop(stack.api_env(), shop, CACHE_KEY_PREFIX=w.prefix)) as (_, client):
        for params in variants.values():
            await client.get("/order-lines", params=params)
            assert (await client.get("/order-lines", params=params)).headers["x-cache"] == "HIT"
        new_status = "returned" if mine["status"].lower() != "returned" else "packed"
        run(sdb, "UPDATE order_lines SET status = %s WHERE order_id = 100400 AND line_no = 1", new_status)
        moved = {"order": "100400", "status": new_status}

        async def x_cache(params: dict[str, str]) -> str:
            return (await client.get("/order-lines", params=params)).headers["x-cache"]

        async def invalidated(params: dict[str, str]) -> bool:
            return await x_cache(params) != "HIT"

        for name in ("mine", "mine+status", "all"):
            await wait_for_async(lambda n=name: invalidated(variants[n]), 10, f"{name} invalidated")
        assert await x_cache(variants["other"]) == "HIT"  # another order: untouched
        fresh = await client.get("/order-lines", params=moved)
        assert any(x["line_no"] == 1 for x in fresh.json())


# ------------------------------------------------------------ Redis going away


@pytest.mark.redis_kinds("single")
async def test_redis_gone_answers_from_mysql(stack: Stack, shop: MariaDB, redis_factory) -> None:
    server = redis_factory()
    env = on_shop(stack.api_env(), shop, REDIS_HOST=server.host, REDIS_PORT=str(server.port),
                  REDIS_CLUSTER="0", REDIS_TIMEOUT_S="0.2", API_REDIS_BREAKER_S="0")
    async with running(env) as (_, client):
        assert (await client.get("/customers/C00500")).headers["x-cache"] == "MISS"
        server.proc.send_signal(signal.SIGSTOP)
        try:
            for path in ("/customers/C00499", "/order-lines?order=100499", "/customers?country=fr"):
                answer = await client.get(path)
                assert (answer.status_code, answer.headers["x-cache"]) == (200, "BYPASS"), path
        finally:
            server.proc.send_signal(signal.SIGCONT)
