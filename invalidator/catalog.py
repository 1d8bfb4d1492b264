"""The declaration, as the invalidator follows it: the catalog, its rules, and the weights.

The catalog is resolved against the server at start (a mistake is a start-up check
failure: one line each) and again after DDL on a followed table, whose columns may have
changed.  Collation weights of list filter values (:mod:`cachetail.collation`) are asked
of the server on a connection of their own, kept open; a failure there is a lost MySQL
connection like any other: the worker reconnects and re-reads from its saved position.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import pymysql

from cachetail import config as declaration
from cachetail.codec_columns import load_columns
from cachetail.config import ConfigError
from cachetail.keyspace import Keyspace
from cachetail.schema import Catalog, resolve

from invalidator.checks import CheckFailed, json_problems
from invalidator.rules import TableRules, rules_by_table
from invalidator.source import close_quietly

log = logging.getLogger("invalidator")


def load_catalog(conn: pymysql.connections.Connection, path: str, database: str,
                 refresh: bool = False) -> Catalog:
    """The declaration in ``path`` checked against ``database``, and the followed tables
    against the mode (:func:`~invalidator.checks.json_problems`); CheckFailed with every problem."""
    try:
        catalog = resolve(declaration.load(path), conn, database)
    except ConfigError as exc:
        raise CheckFailed("\n".join(f"{exc.source}: {line}" for line in exc.errors)) from None
    columns = {table: load_columns(conn, table, database) for table in catalog.tables} if refresh else {}
    problems = json_problems(columns, refresh)
    if problems:
        raise CheckFailed("\n".join(problems))
    return catalog


class Followed:
    """What the worker follows now: the catalog, each table's rules, the DDL that concerns it."""

    def __init__(self, catalog: Catalog, keyspace: Keyspace) -> None:
        self.catalog = catalog
        self.rules: dict[str, TableRules] = rules_by_table(catalog, keyspace)
        self.ddl = re.compile(r"\b(" + "|".join(re.escape(t) for t in catalog.tables) + r")\b", re.IGNORECASE)
        self.patterns: dict[str, tuple[str, ...]] = {}
        for table in catalog.tables:
            entities, lists = catalog.on_table(table)
            self.patterns[table.lower()] = (
                *(keyspace.row_prefix(e.spec.key_tag) + "*" for e in entities),
                *(p for x in lists for p in keyspace.list_patterns(x.spec.key_tag)))

    def cleared_by(self, statement: str) -> set[str]:
        """The SCAN patterns of every table a DDL statement names."""
        return {p for table in self.ddl.findall(statement) for p in self.patterns.get(table.lower(), ())}


class Weights:
    """``query(sql, args)`` for collation weights, on a connection of its own."""

    def __init__(self, connect: Callable[[], pymysql.connections.Connection]) -> None:
        self.connect = connect
        self.conn: pymysql.connections.Connection | None = None

    def __call__(self, sql: str, args: tuple[str, ...]) -> tuple[str, ...]:
        try:
            if self.conn is None:
                self.conn = self.connect()
            with self.conn.cursor() as cur:
                cur.execute(sql, args)
                row = cur.fetchone()
        except pymysql.err.MySQLError as exc:
            self.close()
            raise ConnectionError(f"collation weights: {exc}") from exc
        if row is None:
            raise ConnectionError("collation weights: no row")
        return tuple(str(v) for v in row)

    def close(self) -> None:
        close_quietly(self.conn)
        self.conn = None
