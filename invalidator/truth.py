"""What a cached key should hold now: the bytes a cold fill would store, from MySQL.

An owned key names what it caches (:meth:`cachetail.keyspace.Keyspace.parse`): an entity
row by its key text, or a page of a list variant by its filter assignment and cursor.
:class:`Truth` turns the name back into the SELECT the API would run and the bytes it
would store, with the same catalog and codecs, so a comparison with Redis is exact.

What Redis holds is read as the API reads it: a lease is no value; a negative entry says
"no such row"; a list page counts only while its stamp is the variant's generation (a
stale stamp is a miss, never served).  A variant named by a collation weight cannot be
turned back into a value: the value is taken from the cached page's own rows, checked
against the weight; an empty page of such a variant is not checked.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import pymysql

from cachetail.codec import BadKey
from cachetail.keyspace import LEASE, NEGATIVE, STAMPED, Keyspace, KeyParts
from cachetail.schema import NEXT, Catalog, Entity, Filter, Listing

Query = Callable[[str, tuple[str, ...]], tuple[str, ...]]
ABSENT = object()  # nothing cached (no key, a lease, a stale stamp): never wrong


@dataclass(frozen=True)
class Target:
    key: str
    name: str  # the entity or list: the log's subject
    entity: Entity | None = None
    values: tuple[Any, ...] = ()
    listing: Listing | None = None
    filters: tuple[tuple[Filter, Any], ...] = ()
    after: tuple[Any, ...] | None = None
    generation: str | None = None  # a page's generation key


class Truth:
    def __init__(self, catalog: Catalog, keyspace: Keyspace) -> None:
        self.keyspace = keyspace
        self.entities = {e.spec.key_tag: e for e in catalog.entities}
        self.lists = {x.spec.key_tag: x for x in catalog.lists}

    def page_of(self, generation_key: str) -> str | None:
        """The first page of the variant whose generation this is (what a bump made stale)."""
        parts = self.keyspace.parse(generation_key)
        return self.keyspace.list_page(parts.variant) if parts.kind == "generation" else None

    def target(self, key: str, cached: bytes | None, query: Query) -> Target | None:
        """What ``key`` caches; None for a key that is not a row or page of the catalog, or a
        variant that cannot be named from what is cached."""
        parts = self.keyspace.parse(key)
        if parts.kind == "row" and parts.tag in self.entities:
            entity = self.entities[parts.tag]
            try:
                values = entity.keys.parse([unquote(p) for p in parts.text.split(":")])
            except BadKey:
                return None
            return Target(key, entity.name, entity=entity, values=values)
        if parts.kind == "page" and parts.tag in self.lists:
            return self._page(key, parts, self.lists[parts.tag], cached, query)
        return None

    def _page(self, key: str, parts: KeyParts, listing: Listing, cached: bytes | None,
              query: Query) -> Target | None:
        by_param = {f.param: f for f in listing.filters}
        filters = []
        for param, text in parts.assignment:
            f = by_param.get(param)
            if f is None:
                return None
            value = self._filter_value(f, text, cached, query)
            if value is None:
                return None
            filters.append((f, value))
        after = None
        if parts.cursor is not None:
            if listing.cursor is None:
                return None
            try:
                after = listing.cursor.parse([unquote(p) for p in parts.cursor.split(":")])
            except BadKey:
                return None
        return Target(key, listing.name, listing=listing, filters=tuple(filters), after=after,
                      generation=self.keyspace.list_generation(parts.variant))

    @staticmethod
    def _filter_value(f: Filter, text: str, cached: bytes | None, query: Query) -> Any:
        if not f.by_weight:
            try:
                return f.codec.parse([unquote(text)])[0]
            except BadKey:
                return None
        rows = _rows(cached)  # the value behind a weight: one of the page's own rows
        for row in rows:
            value = row.get(f.column.name) if isinstance(row, dict) else None
            weigher = f.weigher
            assert weigher is not None
            if isinstance(value, str) and (weigher.known(value) or weigher.weigh([value], query)[value]) == text:
                return value
        return None

    # ------------------------------------------------------------------ reads

    def cached(self, target: Target, value: bytes | None, generation: bytes | None) -> object:
        """What Redis serves for ``target``: ABSENT, None (a cached "no such row") or bytes."""
        if value is None or value[:1] == LEASE:
            return ABSENT
        if target.entity is not None:
            return None if value[:1] == NEGATIVE else value
        if value[:1] != STAMPED or generation is None:
            return ABSENT
        end = value.find(b"\n")
        return value[end + 1:] if value[1:end] == generation else ABSENT

    def now(self, conn: pymysql.connections.Connection, target: Target) -> bytes | None:
        """The bytes a cold fill would store now: a row's JSON (None: no row) or a page's payload."""
        with conn.cursor(pymysql.cursors.DictCursor) as cur:
            if target.entity is not None:
                cur.execute(target.entity.select_sql, target.values)
                row = cur.fetchone()
                return None if row is None else target.entity.rows.from_select(row)
            assert target.listing is not None
            sql, args = target.listing.page_sql(target.filters, target.after)
            cur.execute(sql, args)
            return target.listing.payload(list(cur.fetchall()))


def _rows(value: bytes | None) -> list[Any]:
    """The rows of a cached page: its stamp, then (when paged) its cursor, then the JSON array."""
    if not value:
        return []
    if value[:1] == STAMPED:
        value = value[value.index(b"\n") + 1:]
    if not value.startswith(b"[") and NEXT in value:
        value = value[value.index(NEXT) + 1:]
    try:
        rows = json.loads(value)
    except ValueError:
        return []
    return rows if isinstance(rows, list) else []
