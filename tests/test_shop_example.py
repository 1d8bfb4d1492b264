"""The shipped second schema: sql/examples/shop.sql loads (twice, harmlessly) and
examples/shop.toml resolves against it, as the API's account, with the rows it exercises."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from cachetail import config, schema
from cachetail.collation import Weigher
from cachetail.devstack import EXAMPLES_DIR, DevStackError, MariaDB, load_example
from support.cli import SHOP, cachetail
from support.shop import serve_shop, shop_connection
from support.stack import API_PASSWORD, INVALIDATOR_PASSWORD

TABLES = ("customers", "orders", "order_lines", "gift_cards")
COUNTS = {"customers": 503, "orders": 2000, "order_lines": 10760, "gift_cards": 200}


@pytest.fixture(scope="module")
def shop_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDB]:
    """Its own: these tests count the rows the shop protocol tests add to theirs."""
    yield from serve_shop(tmp_path_factory)


@pytest.fixture
def api_conn(shop_db: MariaDB) -> Iterator[pymysql.connections.Connection]:
    yield from shop_connection(shop_db, user="cachetail_api", password=API_PASSWORD)


def resolve(conn: pymysql.connections.Connection) -> schema.Catalog:
    return schema.resolve(config.load(SHOP), conn, "shop")


def test_the_shop_resolves_as_the_api_account(api_conn: pymysql.connections.Connection) -> None:
    catalog = resolve(api_conn)
    assert catalog.tables == ("customers", "orders", "gift_cards", "order_lines")
    customer, order, card = catalog.entities
    # a VARCHAR key under utf8mb4_unicode_ci: other spellings find the row, so no 404 is cached
    assert customer.keys.names == ("code",) and customer.keys.columns[0].collation == "utf8mb4_unicode_ci"
    assert not customer.negatives
    assert "password_hash" not in [c.name for c in customer.columns]
    assert [c.name for c in customer.columns if c.is_json] == ["preferences"]  # MariaDB's JSON
    assert order.keys.names == ("customer_id", "order_id") and order.negatives
    assert order.select_sql.endswith(" FROM `shop`.`orders` WHERE `customer_id` = %s AND `order_id` = %s")
    assert len(order.columns) == 10  # every column, none declared
    uuid, = card.keys.columns
    assert (uuid.data_type, uuid.char_length) == ("binary", 16) and card.negatives
    lines, orders, customers, cards = catalog.lists
    assert [(f.param, f.column.name, f.weigher is not None) for f in lines.filters] == [
        ("order", "order_id", False), ("status", "status", True)]
    assert lines.cursor is not None and lines.cursor.names == ("order_id", "line_no")
    assert lines.order_sql == "ORDER BY `order_id`, `line_no` LIMIT 50"
    assert [(f.param, f.weigher is not None) for f in orders.filters] == [("customer", False), ("status", True)]
    assert orders.order_sql == "ORDER BY `order_id` DESC LIMIT 50"
    assert customers.filters[0].column.data_type == "char" and customers.filters[0].by_weight
    assert customers.cursor is not None and customers.cursor.names == ("code",)
    # an ENUM filter under a _ci collation: named by the member, found by weight; a DATE: exact
    tier = customers.filters[1]
    assert (tier.members, tier.weigher is not None, tier.by_weight) == (("standard", "silver", "gold"), True, False)
    state, expires = cards.filters
    assert state.members == ("active", "redeemed", "void") and expires.column.data_type == "date"
    assert expires.weigher is None and cards.cursor is not None and cards.cursor.names == ("id",)


def _rows(conn: pymysql.connections.Connection, sql: str, args: Any = None) -> list[dict[str, Any]]:
    with conn.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


def test_every_sample_row_is_served(api_conn: pymysql.connections.Connection) -> None:
    catalog = resolve(api_conn)
    served: dict[str, dict[str, bytes]] = {}
    for entity in catalog.entities:
        rows = _rows(api_conn, entity.select_sql.split(" WHERE ")[0])
        served[entity.name] = {entity.keys.text_from_row(r): entity.rows.from_select(r) for r in rows}
    assert {name: len(rows) for name, rows in served.items()} == {"customer": 503, "order": 2000, "gift_card": 200}
    assert served["customer"]["CAF%C3%89"] == (
        '{"id":501,"code":"CAFÉ","name":"Café Ünïcode ☕","email":"cafe@shop.example","country":"FR",'
        '"tier":"gold","tags":["vip"],"balance":"1234.50",'
        '"preferences":{"locale":"fr-FR","newsletter":true,"note":"déjà vu 🥐"},'
        '"created_at":"2023-06-01T12:00:00.125","updated_at":"2024-02-01T08:00:00.500Z"}').encode()
    assert served["order"]["90:100097"] == (
        b'{"customer_id":90,"order_id":100097,"status":"Shipped","placed_at":"2024-01-02T03:29:00.007",'
        b'"shipped_at":"2024-01-04T03:29:00.067Z","total":"1481.03","currency":"GBP","note":null,'
        b'"shipping":{"method":"express","parcels":2,"insured":true},"updated_at":"2024-01-06T03:29:00.000Z"}')
    assert served["gift_card"]["5ca1ab1e000040008000000000000006"] == (
        '{"id":"5ca1ab1e-0000-4000-8000-000000000006","customer_id":79,"initial_value":"50.00",'
        '"balance":"12.50","currency":"EUR","state":"active","flags":6,"message":"Happy birthday 🎂",'
        '"issued_at":"2023-11-02T06:00:00.018","expires_on":"2025-01-07","updated_at":"2024-02-01T00:06:00.000Z"}'
    ).encode()
    for listing in catalog.lists:
        rows = _rows(api_conn, f"{listing.select_sql} {listing.order_sql}")
        assert listing.rows.list_from_select(rows).startswith(b"[{")


def test_the_collation_trap_is_in_the_data(api_conn: pymysql.connections.Connection) -> None:
    catalog = resolve(api_conn)
    customer = catalog.entities[0]
    for spelling in ("cafe", "Café", "CAFÉ"):
        values = customer.keys.parse([spelling])
        row, = _rows(api_conn, customer.select_sql, values)
        assert row["code"] == "CAFÉ"
        # only the row's own spelling may hold its copy
        assert customer.keys.canonical(values, row) is (spelling == "CAFÉ")
    row, = _rows(api_conn, customer.select_sql, customer.keys.parse(["c00042"]))
    assert row["code"] == "C00042"
    # list filters: 'Shipped' rows answer ?status=shipped, and their variant is the same
    assert _rows(api_conn, "SELECT COUNT(*) AS n FROM orders WHERE status = 'shipped'")[0]["n"] == 416
    assert _rows(api_conn, "SELECT COUNT(*) AS n FROM customers WHERE country = 'DE'")[0]["n"] == 72
    status = catalog.lists[1].filters[1]
    assert isinstance(status.weigher, Weigher)

    def query(sql: str, args: tuple[str, ...]) -> tuple[str, ...]:
        with api_conn.cursor() as cur:
            cur.execute(sql, args)
            found = cur.fetchone()
        assert found is not None
        return tuple(str(v) for v in found)

    weights = status.weigher.weigh(["shipped", "Shipped", "SHIPPED  "], query)
    assert len(set(weights.values())) == 1


def _statements(path: Path) -> list[str]:
    """The ';'-terminated statements of a script (none of shop.sql's ends a line inside a string)."""
    parts = re.split(r";[ \t]*$", path.read_text(), flags=re.MULTILINE)
    return [p for p in parts if any(line.strip() and not line.strip().startswith("--") for line in p.splitlines())]


def _fingerprint(db: MariaDB) -> dict[str, tuple[int, int]]:
    out = {}
    for table in TABLES:
        count = int(db.query(f"SELECT COUNT(*) FROM shop.{table}")[0][0])
        out[table] = (count, int(db.query(f"CHECKSUM TABLE shop.{table}")[0][1]))
    return out


def test_shop_sql_is_deterministic_warning_free_and_runs_twice(shop_db: MariaDB) -> None:
    loaded = _fingerprint(shop_db)
    assert {t: n for t, (n, _) in loaded.items()} == COUNTS
    # again from nothing, statement by statement: not one warning (no value truncated or
    # coerced), and the very same rows
    shop_db.query("DROP DATABASE shop")
    conn = shop_db.connect()
    try:
        with conn.cursor() as cur:
            for statement in _statements(EXAMPLES_DIR / "shop.sql"):
                cur.execute(statement)
                cur.execute("SHOW WARNINGS")
                assert cur.fetchall() == (), statement[:200]
    finally:
        conn.close()
    assert _fingerprint(shop_db) == loaded
    # and a second run on top changes nothing
    load_example(shop_db, "shop", API_PASSWORD, INVALIDATOR_PASSWORD)
    assert _fingerprint(shop_db) == loaded


def test_check_prints_the_shop(shop_db: MariaDB, tmp_path: Path) -> None:
    env = {"DB_HOST": shop_db.host, "DB_PORT": str(shop_db.port), "DB_NAME": "shop", "DB_USER": "cachetail_api",
           "DB_PASSWORD": API_PASSWORD, "CACHETAIL_CONFIG": str(SHOP)}
    done = cachetail(tmp_path, env, "check")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "  key         code  varchar(32) utf8mb4_unicode_ci (in Redis: percent-encoded UTF-8" in out
    assert "  redis key   ct:{c:<code>}\n" in out
    assert "ttl         600 s; a 404 is not cached: the key's collation finds other spellings" in out
    assert ("  key         customer_id  int(10) unsigned (in Redis: decimal)\n"
            "              order_id     bigint(20) unsigned (in Redis: decimal)\n") in out
    assert "  redis key   ct:{o:<customer_id>:<order_id>}\n" in out
    assert "  ttl         300 s; a 404 for 30 s\n" in out
    assert "  key         id  binary(16) (in Redis: 32 lowercase hex digits" in out
    assert "  GET /order-lines   query parameters, each optional: order, status, after\n" in out
    assert "  filters     order: column order_id bigint(20) unsigned, exact (a variant per value)\n" in out
    assert "              ct:{ol:order=<order_id>&status=~<weight(status)>}:a:<order_id>:<line_no>\n" in out
    assert "  order       order_id descending\n" in out
    assert ("tables the invalidator follows, in shop\n  customers    entity customer, list customers\n"
            "  orders       entity order, list orders\n  gift_cards   entity gift_card, list gift_cards\n"
            "  order_lines  list order_lines\n") in out
    assert "  GRANT SELECT ON `shop`.`order_lines` TO 'cachetail_invalidator'@'%';\n" in out


def test_load_example_names_the_known_ones(shop_db: MariaDB) -> None:
    with pytest.raises(DevStackError, match=r"no example schema 'nope' .* \(known: shop\)"):
        load_example(shop_db, "nope", API_PASSWORD, INVALIDATOR_PASSWORD)
