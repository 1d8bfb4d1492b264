"""The lab declaration (cachetail.toml) as the tests use it: keys and served bytes built by
the same code as the API and the invalidator, never spelled by hand."""

from __future__ import annotations

import functools
from typing import Any

import pymysql

from cachetail import config, schema
from cachetail.devstack import ROOT
from cachetail.keyspace import Keyspace

LAB = config.load(ROOT / "cachetail.toml")


@functools.cache
def _catalog(host: str, port: int) -> schema.Catalog:
    conn = pymysql.connect(host=host, port=port, user="root", password="", database="cachelab")
    try:
        return schema.resolve(LAB, conn, "cachelab")
    finally:
        conn.close()


def catalog(conn: pymysql.connections.Connection) -> schema.Catalog:
    return _catalog(conn.host, conn.port)


def user_bytes(conn: pymysql.connections.Connection, row: dict[str, Any]) -> bytes:
    """What the API serves for a users row (a SELECT of every column, as a dict)."""
    return catalog(conn).entities[0].rows.from_select(row)


def products_variant(conn: pymysql.connections.Connection, category: str | None = None) -> str:
    if category is None:
        return Keyspace.variant("p")
    (f,) = catalog(conn).lists[0].filters
    assert f.weigher is not None

    def query(sql: str, args: tuple[str, ...]) -> tuple[str, ...]:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return tuple(str(v) for v in cur.fetchone())

    return Keyspace.variant("p", (("category", f.weigher.weigh([category], query)[category]),))


def products_page(ks: Keyspace, conn: pymysql.connections.Connection, category: str | None = None) -> str:
    return ks.list_page(products_variant(conn, category))


def products_generation(ks: Keyspace, conn: pymysql.connections.Connection,
                        category: str | None = None) -> str:
    return ks.list_generation(products_variant(conn, category))
