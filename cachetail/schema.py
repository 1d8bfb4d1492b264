"""The declaration checked against the database: the catalog both processes serve from.

:func:`resolve` reads ``information_schema`` once and gives every declared entity and
list its columns and codecs, or raises :class:`~cachetail.config.ConfigError` with one
line per problem: an unknown table or column, a key that is not the primary key or a
NOT NULL unique key, a type cachetail cannot serve or key on, an order that cannot page.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pymysql

from cachetail.codec import Column, KeyCodec, RowCodec, load_columns, quote_identifier, unsupported
from cachetail.codec_keys import unsupported_filter, unsupported_key
from cachetail.collation import Weigher, is_exact
from cachetail.config import Config, ConfigError, EntitySpec, ListSpec

_UNIQUE_SQL = (
    "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS"
    " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s AND NON_UNIQUE = 0"
    " ORDER BY INDEX_NAME, SEQ_IN_INDEX"
)


@dataclass(frozen=True)
class Entity:
    spec: EntitySpec
    table: str  # `schema`.`table`, quoted
    columns: tuple[Column, ...]  # served, in served order
    keys: KeyCodec
    rows: RowCodec
    select_sql: str  # ... WHERE <key> = %s ...
    negatives: bool  # a 404 may be cached: a TTL and no other spelling can match a row later

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class Filter:
    param: str
    column: Column
    codec: KeyCodec  # parses the query value, spells exact values
    # An inexact collation: a string's variant is named by the value's weight; an ENUM's by
    # the member the value equals under the collation (found by weight, in the API).
    weigher: Weigher | None
    members: tuple[str, ...] = ()  # an ENUM's members: the variant is named by the member

    @property
    def by_weight(self) -> bool:
        """The variant is named by the weight of the value (an inexact string, not an ENUM)."""
        return self.weigher is not None and not self.members


@dataclass(frozen=True)
class Listing:
    spec: ListSpec
    table: str
    columns: tuple[Column, ...]
    rows: RowCodec
    filters: tuple[Filter, ...]
    order: tuple[tuple[Column, bool], ...]  # (column, descending)
    cursor: KeyCodec | None  # the order columns, when paging: parses and spells ?after=
    select_sql: str  # SELECT ... FROM t   (WHERE, ORDER BY and LIMIT are added per read)
    order_sql: str  # ORDER BY ... LIMIT n

    @property
    def name(self) -> str:
        return self.spec.name

    def page_sql(self, filters: Sequence[tuple[Filter, Any]], after: Sequence[Any] | None
                 ) -> tuple[str, tuple[Any, ...]]:
        """One page: the filters' equalities, after the cursor in the list's order, its limit."""
        where = [f"{quote_identifier(f.column.name)} = %s" for f, _ in filters]
        args: list[Any] = [value for _, value in filters]
        if after is not None:
            condition, after_args = self.keyset(after)
            where.append(condition)
            args.extend(after_args)
        sql = self.select_sql + (" WHERE " + " AND ".join(where) if where else "") + " " + self.order_sql
        return sql, tuple(args)

    def keyset(self, after: Sequence[Any]) -> tuple[str, list[Any]]:
        """Rows after the cursor in the list's order (each column ascending or descending):
        ``(a > x) OR (a = x AND b < y) ...`` and its arguments."""
        ors, args = [], []
        for i, (column, descending) in enumerate(self.order):
            terms = [f"{quote_identifier(c.name)} = %s" for c, _ in self.order[:i]]
            terms.append(f"{quote_identifier(column.name)} {'<' if descending else '>'} %s")
            ors.append("(" + " AND ".join(terms) + ")")
            args.extend([*after[:i], after[i]])
        return "(" + " OR ".join(ors) + ")", args

    def payload(self, rows: Sequence[Mapping[str, Any]]) -> bytes:
        """What a page's value holds: the JSON array, after the next page's cursor when paged
        (``<cursor or nothing>\\n<json>``; a full page has a next)."""
        body = self.rows.list_from_select(rows)
        if not self.spec.paging:
            return body
        more = self.cursor is not None and len(rows) == self.spec.limit and rows
        return (self.cursor.text_from_row(rows[-1]).encode() if self.cursor and more else b"") + NEXT + body


NEXT = b"\n"  # a paged value: <next cursor or nothing> NEXT <json array>


@dataclass(frozen=True)
class Catalog:
    config: Config
    database: str
    entities: tuple[Entity, ...]
    lists: tuple[Listing, ...]

    def on_table(self, table: str) -> tuple[tuple[Entity, ...], tuple[Listing, ...]]:
        return (tuple(e for e in self.entities if e.spec.table == table),
                tuple(x for x in self.lists if x.spec.table == table))

    @property
    def tables(self) -> tuple[str, ...]:
        return self.config.tables


class _Table:
    """One table's columns and unique keys, loaded once."""

    def __init__(self, conn: pymysql.connections.Connection, database: str, name: str) -> None:
        self.name = name
        self.quoted = f"{quote_identifier(database)}.{quote_identifier(name)}"
        self.columns = {c.name: c for c in load_columns(conn, name, database)}
        uniques: dict[str, list[str]] = {}
        with conn.cursor(pymysql.cursors.Cursor) as cur:  # tuples, whatever the connection's default
            cur.execute(_UNIQUE_SQL, (database, name))
            for index, column in cur.fetchall():
                uniques.setdefault(str(index), []).append(str(column))
        self.unique = {k: tuple(v) for k, v in uniques.items()
                       if all(c in self.columns and not self.columns[c].nullable for c in v)}

    def describe_unique(self) -> str:
        return ", ".join(f"{name}({', '.join(cols)})" for name, cols in sorted(self.unique.items())) or "none"


def resolve(config: Config, conn: pymysql.connections.Connection, database: str) -> Catalog:
    errors: list[str] = []
    tables = {name: _Table(conn, database, name) for name in config.tables}
    entities = [e for e in (_entity(s, tables[s.table], database, errors) for s in config.entities) if e]
    lists = [x for x in (_listing(s, tables[s.table], database, errors) for s in config.lists) if x]
    if errors:
        raise ConfigError(config.source, errors)
    return Catalog(config, database, tuple(entities), tuple(lists))


def _served(where: str, table: _Table, database: str, wanted: tuple[str, ...] | None,
            errors: list[str]) -> list[Column] | None:
    if not table.columns:
        errors.append(f"{where}.table: no table {database}.{table.name} (or no privilege to see it)")
        return None
    names = list(wanted) if wanted is not None else list(table.columns)
    return _columns(f"{where}.columns", table, names, unsupported, errors)


def _key_columns(where: str, field: str, table: _Table, names: Sequence[str],
                 errors: list[str]) -> list[Column] | None:
    return _columns(f"{where}.{field}", table, names, unsupported_key, errors)


def _columns(at: str, table: _Table, names: Sequence[str], problem: Callable[[Column], str | None],
             errors: list[str]) -> list[Column] | None:
    """``names``' columns of ``table``, or None with a line in ``errors`` (prefixed by ``at``)
    for each that is missing, or that ``problem`` turns away."""
    missing = [n for n in names if n not in table.columns]
    if missing:
        errors.append(f"{at}: no column {', '.join(missing)} in {table.name}")
        return None
    problems = [p for p in (problem(table.columns[n]) for n in names) if p]
    errors.extend(f"{at}: {p}" for p in problems)
    return None if problems else [table.columns[n] for n in names]


def _filter_column(where: str, table: _Table, name: str, errors: list[str]) -> list[Column] | None:
    """A filter parses and spells its value as a key column does (a DATE too), but may be NULL
    (a NULL row belongs only to the variants that do not filter on it)."""
    column = table.columns.get(name)
    if column is None:
        errors.append(f"{where}.filters: no column {name} in {table.name}")
        return None
    problem = unsupported_filter(column)
    if problem:
        errors.append(f"{where}.filters: {problem}")
        return None
    return [replace(column, nullable=False)]


def _entity(spec: EntitySpec, table: _Table, database: str, errors: list[str]) -> Entity | None:
    before = len(errors)
    served = _served(spec.where, table, database, spec.columns, errors)
    if served is None:
        return None
    key = _key_columns(spec.where, "key", table, spec.key, errors)
    if key is not None and set(spec.key) not in [set(cols) for cols in table.unique.values()]:
        errors.append(f"{spec.where}.key: ({', '.join(spec.key)}) is not the primary key or a NOT NULL"
                      f" unique key of {table.name} (its unique keys: {table.describe_unique()})")
    if key is None or len(errors) != before:
        return None
    keys = KeyCodec(key)
    rows = RowCodec(served)
    sql = f"SELECT {rows.select_list()} FROM {table.quoted} WHERE {keys.where()}"
    return Entity(spec, table.quoted, tuple(served), keys, rows, sql,
                  spec.negative_ttl_s > 0 and keys.negatives_cacheable)


def _listing(spec: ListSpec, table: _Table, database: str, errors: list[str]) -> Listing | None:
    before = len(errors)
    served = _served(spec.where, table, database, spec.columns, errors)
    if served is None:
        return None
    filters = []
    for param, name in spec.filters:
        found = _filter_column(spec.where, table, name, errors)
        if found:
            column = found[0]
            enum = column.data_type == "enum"
            exact = not (column.is_text or enum) or is_exact(column.charset, column.collation)
            weigher = None if exact else Weigher(column.charset or "", column.collation or "")
            filters.append(Filter(param, column, KeyCodec(found, [param], filter=True), weigher,
                                  column.members if enum else ()))
    missing = [c for c, _ in spec.order if c not in table.columns]
    if missing:
        errors.append(f"{spec.where}.order: no column {', '.join(missing)} in {table.name}")
        return None
    order = tuple((table.columns[c], desc) for c, desc in spec.order)
    cursor = None
    if spec.paging:
        names = [c for c, _ in spec.order]
        if not any(set(cols) <= set(names) for cols in table.unique.values()):
            errors.append(f"{spec.where}.order: paging needs an order that includes a NOT NULL unique key"
                          f" of {table.name} (its unique keys: {table.describe_unique()})")
        found = _key_columns(spec.where, "order", table, names, errors)
        enums = [c.name for c in found or () if c.data_type == "enum"]
        if enums:
            errors.append(f"{spec.where}.order: paging cannot order by the ENUM {', '.join(enums)}: an ENUM"
                          " sorts by its member's index but compares as text, so a keyset cursor would"
                          " skip or repeat rows")
        elif found and len(found) <= 3:
            cursor = KeyCodec(found, [f"after.{n}" for n in names])
        elif found:
            errors.append(f"{spec.where}.order: paging orders by at most 3 columns")
    if len(errors) != before:
        return None
    rows = RowCodec(served)
    order_sql = "ORDER BY " + ", ".join(
        f"{quote_identifier(c.name)}{' DESC' if desc else ''}" for c, desc in order) + f" LIMIT {spec.limit}"
    return Listing(spec, table.quoted, tuple(served), rows, tuple(filters), order, cursor,
                   f"SELECT {rows.select_list()} FROM {table.quoted}", order_sql)
