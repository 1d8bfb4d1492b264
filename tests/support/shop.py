"""The shop (examples/shop.toml on sql/examples/shop.sql) for the protocol tests: its MariaDB
(one per session, as the tests restore what they change), environments pointing at it, and
its rows' keys, paths and cold bytes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from cachetail import config, schema
from cachetail.devstack import ROOT, MariaDB, load_example
from support.invalidator import WorkerProcess
from support.stack import API_PASSWORD, INVALIDATOR_PASSWORD, Stack, start_mariadb

SHOP_TOML = ROOT / "examples" / "shop.toml"
UUID1 = "5ca1ab1e-0000-4000-8000-000000000001"


def customer_of(order_id: int) -> int:
    """sql/examples/shop.sql: order 100000+n belongs to customer 1 + (37n mod 500)."""
    return 1 + ((order_id - 100000) * 37 % 500)


def order_path(order_id: int) -> str:
    return f"/orders/{customer_of(order_id)}/{order_id}"


def start_shop(base: Path) -> MariaDB:
    """A MariaDB of its own (the lab's schema and accounts) with the shop loaded."""
    server = start_mariadb(base)
    try:
        load_example(server, "shop", API_PASSWORD, INVALIDATOR_PASSWORD)
    except BaseException:
        server.kill()
        raise
    return server


def serve_shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDB]:
    """A fixture's body: a shop server of its own, killed after."""
    server = start_shop(tmp_path_factory.mktemp("shop"))
    yield server
    server.kill()


def shop_connection(server: MariaDB, **kwargs: Any) -> Iterator[pymysql.connections.Connection]:
    """A fixture's body: a connection to the shop database, in UTC, closed after."""
    conn = server.connect(database="shop", init_command="SET time_zone = '+00:00'", **kwargs)
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDB]:
    yield from serve_shop(tmp_path_factory)


@pytest.fixture
def sdb(shop: MariaDB) -> Iterator[pymysql.connections.Connection]:
    yield from shop_connection(shop, cursorclass=pymysql.cursors.DictCursor)


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


async def settled(app: Any) -> None:
    """Past every invalidation Redis had pushed to this worker's near-cache (a round trip
    on its tracking connection), so a read right after sees what Redis has."""
    tracker = app.state.services.tracker
    if tracker is not None:
        await tracker.sync()


def card_id(n: int) -> bytes:
    """sql/examples/shop.sql: gift card n's BINARY(16) id."""
    return bytes.fromhex(f"5ca1ab1e000040008000{n:012x}")
