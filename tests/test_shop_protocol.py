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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from cachetail import config, schema
from cachetail.devstack import MariaDB, load_example
from cachetail.keyspace import Keyspace
from support.api import Delta, running, selects
from support.invalidator import WorkerProcess
from support.stack import API_PASSWORD, INVALIDATOR_PASSWORD, Stack, start_mariadb
from support.waiting import wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.redis_kinds("single", "cluster")]
SHOP_TOML = Path(__file__).resolve().parent.parent / "examples" / "shop.toml"
UUID1 = "5ca1ab1e-0000-4000-8000-000000000001"
RUNS = itertools.count(1)


def customer_of(order_id: int) -> int:
    """sql/examples/shop.sql: order 100000+n belongs to customer 1 + (37n mod 500)."""
    return 1 + ((order_id - 100000) * 37 % 500)


def order_path(order_id: int) -> str:
    return f"/orders/{customer_of(order_id)}/{order_id}"


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDB]:
    server = start_mariadb(tmp_path_factory.mktemp("shop"))
    try:
        load_example(server, "shop", API_PASSWORD, INVALIDATOR_PASSWORD)
        yield server
    finally:
        server.kill()


@pytest.fixture
def sdb(shop: MariaDB) -> Iterator[pymysql.connections.Connection]:
    conn = shop.connect(database="shop", init_command="SET time_zone = '+00:00'",
                        cursorclass=pymysql.cursors.DictCursor)
    yield conn
    conn.close()


def on_shop(env: dict[str, str], shop: MariaDB, **extra: str) -> dict[str, str]:
    return {**env, "DB_HOST": shop.host, "DB_PORT": str(shop.port), "DB_NAME": "shop",
            "CACHETAIL_CONFIG": str(SHOP_TOML), **extra}


def one(conn: pymysql.connections.Connection, sql: str, *args: Any) -> dict[str, Any]:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        row = cur.fetchone()
    assert row is not None, sql
    return dict(row)


def run(conn: pymysql.connections.Connection, sql: str, *args: Any) -> None:
    with conn.cursor() as cur:
        cur.execute(sql, args)


def worker_on_shop(stack: Stack, shop: MariaDB, workers: Any, **extra: str) -> WorkerProcess:
    env = on_shop(stack.invalidator_env(), shop)
    w: WorkerProcess = workers(env, **extra)
    return w


def cold_bytes(shop: MariaDB, entity: str, where: str, *args: Any) -> bytes:
    """What a cold read serves: the declared SELECT and codec, as the API's account."""
    conn = shop.connect(user="cachetail_api", password=API_PASSWORD, database="shop",
                        init_command="SET time_zone = '+00:00'", cursorclass=pymysql.cursors.DictCursor)
    try:
        catalog = schema.resolve(config.load(SHOP_TOML), conn, "shop")
        e = next(x for x in catalog.entities if x.name == entity)
        row = one(conn, f"SELECT {e.rows.select_list()} FROM {e.table} WHERE {where}", *args)
        return e.rows.from_select(row)
    finally:
        conn.close()


@pytest.fixture(autouse=True)
def _near(nearcache: str) -> str:
    return nearcache


async def settled(app: Any) -> None:
    """Past every invalidation Redis had pushed to this worker's near-cache (a round trip
    on its tracking connection), so a read right after sees what Redis has."""
    tracker = app.state.services.tracker
    if tracker is not None:
        await tracker.sync()


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
        wait_for(lambda: redis_client.mget(filled_key, *_generation(filled_key)) != marker,
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
    n = next(RUNS)  # every run changes the rows again (the module's server is shared)
    cases = [
        ("customer", "/customers/C00200", ks.row("c", "C00200"), "code = %s", ("C00200",),
         f"UPDATE customers SET name = 'Zoë 🚀 Refreshed {n}', balance = balance + 0.05,"
         " preferences = '{\"lang\": \"fr\", \"n\": [1, 2.50]}', tags = 'vip,beta' WHERE code = 'C00200'"),
        ("order", order_path(100201), ks.row("o", f"{customer_of(100201)}:100201"), "order_id = %s", (100201,),
         f"UPDATE orders SET status = 'Shipped', shipped_at = '2025-06-0{1 + n % 9} 10:00:00.123'"
         " WHERE order_id = 100201"),
        ("gift_card", "/gift-cards/5ca1ab1e-0000-4000-8000-000000000005",
         ks.row("g", "5ca1ab1e000040008000000000000005"), "id = UNHEX(%s)", ("5ca1ab1e000040008000000000000005",),
         f"UPDATE gift_cards SET flags = {n % 256}, message = NULL WHERE id = UNHEX('5ca1ab1e000040008000000000000005')"),
    ]
    async with running(on_shop(stack.api_env(), shop, CACHE_KEY_PREFIX=w.prefix)) as (app, client):
        for _, path, *_ in cases:
            assert (await client.get(path)).status_code == 200
        for entity, path, key, where, args, write in cases:
            before = redis_client.get(key)
            run(sdb, write)
            wait_for(lambda: redis_client.get(key) not in (None, before), what=f"{entity} refreshed")
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
        wait_for(lambda: not redis_client.exists(ks.row("c", "C00300")), what="its own key invalidated")
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
        wait_for(lambda: not redis_client.exists(ks.row("o", f"{c}:100310"), ks.row("o", f"{c}:990310")),
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

        for name in ("mine", "mine+status", "all"):
            deadline = asyncio.get_running_loop().time() + 10
            while await x_cache(variants[name]) == "HIT" and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
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


# ------------------------------------------------------ ENUM and DATE list filters


def card_id(n: int) -> bytes:
    """sql/examples/shop.sql: gift card n's BINARY(16) id."""
    return bytes.fromhex(f"5ca1ab1e000040008000{n:012x}")


@pytest.mark.redis_kinds("single")
@pytest.mark.parametrize("mode", ["delete", "refresh"])
async def test_an_enum_filtered_list_is_served_and_invalidated_per_variant(
        stack: Stack, shop: MariaDB, redis_client, sdb, workers, mode: str) -> None:
    """?state=Active is the member 'active' (utf8mb4_unicode_ci), one variant with ?state=active.
    A card moving from active to void invalidates those two variants, not 'redeemed'.  The
    binlog carries the member's index: the invalidator names it through the table map."""
    w = worker_on_shop(stack, shop, workers, INVALIDATOR_MODE=mode)
    n = next(i for i in range(1, 201) if i % 5 and i % 23 and i % 4)  # active, with an expiry date
    expires = one(sdb, "SELECT expires_on FROM gift_cards WHERE id = %s", card_id(n))["expires_on"].isoformat()
    async with running(on_shop(stack.api_env(), shop, CACHE_KEY_PREFIX=w.prefix)) as (_, client):
        async def x_cache(**params: str) -> str:
            answer = await client.get("/gift-cards", params=params)
            assert answer.status_code == 200, answer.text
            return answer.headers["x-cache"]

        assert [await x_cache(state="active"), await x_cache(state="Active"), await x_cache(state="ACTIVE ")] \
            == ["MISS", "HIT", "HIT"]
        assert [await x_cache(state="void"), await x_cache(state="redeemed")] == ["MISS", "MISS"]
        assert [await x_cache(expires=expires), await x_cache(expires=expires, state="active")] == ["MISS", "MISS"]
        bad = await client.get("/gift-cards", params={"state": "lost"})
        assert (bad.status_code, bad.json()["error"]) == (400, "invalid_state")
        assert "one of active, redeemed, void" in bad.json()["detail"]
        day = await client.get("/gift-cards", params={"expires": "2025-02-30"})
        assert (day.status_code, day.json()["error"]) == (400, "invalid_expires")

        run(sdb, "UPDATE gift_cards SET state = 'void' WHERE id = %s", card_id(n))
        deadline = asyncio.get_running_loop().time() + 10
        while await x_cache(state="void") == "HIT" and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        assert [await x_cache(state="Active"), await x_cache(expires=expires, state="active")] == ["MISS", "MISS"]
        assert await x_cache(state="redeemed") == "HIT"  # the card was never in it
        voided = await client.get("/gift-cards", params={"state": "VOID", "expires": expires})
        assert [c["state"] for c in voided.json()] == ["void"] and voided.headers["x-cache"] == "MISS"
    run(sdb, "UPDATE gift_cards SET state = 'active' WHERE id = %s", card_id(n))


@pytest.mark.redis_kinds("single")
async def test_enum_members_reordered_by_ddl_are_named_through_the_new_table_map(
        stack: Stack, shop: MariaDB, redis_client, sdb, workers) -> None:
    """ALTER TABLE ... MODIFY reorders the members (the stored indexes change meaning) and adds
    one: the DDL rule drops the list's keys, and the next change is named by the new map."""
    w = worker_on_shop(stack, shop, workers)
    n = next(i for i in range(1, 201) if i % 5 and i % 23 and i % 4 and i > 100)
    async with running(on_shop(stack.api_env(), shop, CACHE_KEY_PREFIX=w.prefix)) as (_, client):
        async def x_cache(state: str) -> str:
            return (await client.get("/gift-cards", params={"state": state})).headers["x-cache"]

        try:
            run(sdb, "ALTER TABLE gift_cards MODIFY state ENUM('void', 'lost', 'redeemed', 'active') NOT NULL")
            await asyncio.to_thread(wait_for, lambda: "DDL on a followed table" in w.log(), 10, "the DDL rule")
            assert [await x_cache("active"), await x_cache("active"), await x_cache("redeemed")] \
                == ["MISS", "HIT", "MISS"]
            run(sdb, "UPDATE gift_cards SET state = 'redeemed' WHERE id = %s", card_id(n))
            deadline = asyncio.get_running_loop().time() + 10
            while await x_cache("active") == "HIT" and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
            assert await x_cache("redeemed") == "MISS"  # index 3 read as 'redeemed', not 'void'
        finally:
            run(sdb, "UPDATE gift_cards SET state = 'active' WHERE id = %s", card_id(n))
            run(sdb, "ALTER TABLE gift_cards MODIFY state ENUM('active', 'redeemed', 'void') NOT NULL")
