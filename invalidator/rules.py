"""What a changed row does to the cache, for every table the declaration names.

For an entity on the table: the row's key before and after the change (the key itself
may change) is deleted, or in refresh mode the after image is written, as the bytes a
cold read would store.  For a list on the table: the generation of every variant the
row belongs to before or after the change is bumped, and only those: for each subset of
the list's filters, the variant of the image's values on that subset (the subset of no
filter being the unfiltered list).  A NULL value belongs to no variant filtering on it.
Variants of inexact collations are named by the value's collation weight
(:mod:`cachetail.collation`), asked of the server through ``query`` and remembered.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cachetail.codec import CodecError
from cachetail.keyspace import Keyspace
from cachetail.schema import Catalog, Entity, Filter, Listing

log = logging.getLogger("invalidator")
Image = Mapping[str, Any]
Row = tuple[Image | None, Image | None, Mapping[str, str] | None]  # before, after, after's none_sources
Query = Callable[[str, tuple[str, ...]], tuple[str, ...]]


class Effects(Protocol):
    """Where a transaction's changes go: implemented by :class:`invalidator.apply.Batch`."""

    refresh: bool

    def delete(self, key: str) -> None: ...

    def write(self, key: str, value: bytes, ttl_s: int) -> None: ...

    def bump(self, key: str) -> None: ...


@dataclass(frozen=True)
class _EntityRule:
    entity: Entity
    tag: str
    ttl_s: int
    text: Callable[[Image], str]  # the key text of an image


def _key_text(entity: Entity) -> Callable[[Image], str]:
    """The key text of an image; one integer column (the common key) without the general path."""
    keys = entity.keys
    if len(keys.columns) != 1 or not keys.columns[0].integer_bits:
        return keys.text_from_binlog
    name = keys.names[0]

    def text(image: Image) -> str:
        value = image[name]
        if value is None:
            raise CodecError(f"key column {name!r} is NULL")
        return str(value)

    return text


@dataclass(frozen=True)
class _ListRule:
    listing: Listing
    subsets: tuple[tuple[Filter, ...], ...]  # every subset of the filters, in declared order


class TableRules:
    def __init__(self, table: str, entities: Iterable[Entity], lists: Iterable[Listing],
                 keyspace: Keyspace) -> None:
        self.table = table
        self.keyspace = keyspace
        self.entities = tuple(_EntityRule(e, e.spec.key_tag, e.spec.ttl_s, _key_text(e)) for e in entities)
        self.lists = tuple(_ListRule(x, _subsets(x.filters)) for x in lists)
        # delete mode reads only these columns of an image
        self.needed = frozenset(
            [n for r in self.entities for n in r.entity.keys.names]
            + [f.column.name for r in self.lists for f in r.listing.filters])

    def apply(self, effects: Effects, before: Image | None, after: Image | None,
              query: Query, after_sources: Mapping[str, str] | None = None) -> None:
        """Record in ``effects`` what changing ``before`` into ``after`` did (None: no row)."""
        ks = self.keyspace
        for rule in self.entities:
            old = None if before is None else rule.text(before)
            new = None if after is None else rule.text(after)
            if old is not None and old != new:
                effects.delete(ks.row(rule.tag, old))
            if new is not None:
                key = ks.row(rule.tag, new)
                value = self._refreshed(rule, after, after_sources) if effects.refresh else None
                if value is None:
                    effects.delete(key)
                else:
                    effects.write(key, value, rule.ttl_s)
        for list_rule in self.lists:
            tag = list_rule.listing.spec.key_tag
            for image in (before, after):
                if image is not None:
                    for variant in _variants(list_rule, image, query):
                        effects.bump(ks.list_generation(Keyspace.variant(tag, variant)))


    def apply_rows(self, effects: Effects, rows: Iterable[Row], query: Query) -> None:
        """:meth:`apply` for each (before, after, after's none_sources) of a rows event; the
        common case of delete mode (one entity, no list) in one loop."""
        if effects.refresh or self.lists or len(self.entities) != 1:
            for before, after, sources in rows:
                self.apply(effects, before, after, query, sources)
            return
        rule = self.entities[0]
        text, tag, key, delete = rule.text, rule.tag, self.keyspace.row, effects.delete
        for before, after, _ in rows:
            old = None if before is None else text(before)
            new = None if after is None else text(after)
            if old is not None and old != new:
                delete(key(tag, old))
            if new is not None:
                delete(key(tag, new))

    @staticmethod
    def _refreshed(rule: _EntityRule, after: Image | None, sources: Mapping[str, str] | None) -> bytes | None:
        """The bytes a cold read would store; None (delete instead) for an image the codec
        cannot serialize."""
        try:
            return None if after is None else rule.entity.rows.from_binlog(after, sources)
        except CodecError as exc:
            log.warning("cannot refresh a row of %s (%s): deleting its key instead", rule.entity.name, exc)
            return None


def rules_by_table(catalog: Catalog, keyspace: Keyspace) -> dict[str, TableRules]:
    out = {}
    for table in catalog.tables:
        entities, lists = catalog.on_table(table)
        out[table] = TableRules(table, entities, lists, keyspace)
    return out


def filter_text(f: Filter, value: Any, query: Query) -> str:
    """The text naming ``value`` in a variant: exact spelling (an ENUM's member, as the row
    holds it), or the collation weight."""
    weigher = f.weigher
    if not f.by_weight or weigher is None:  # by_weight: a weigher (cachetail.schema)
        return f.codec.text_from_params([value])
    return weigher.known(value) or weigher.weigh([value], query)[value]


def _subsets(filters: tuple[Filter, ...]) -> tuple[tuple[Filter, ...], ...]:
    return tuple(combo for n in range(len(filters) + 1) for combo in itertools.combinations(filters, n))


def _variants(rule: _ListRule, image: Image, query: Query) -> list[tuple[tuple[str, str], ...]]:
    texts: dict[str, str | None] = {}
    for f in rule.listing.filters:
        value = image.get(f.column.name)
        texts[f.param] = None if value is None else filter_text(f, value, query)
    out = []
    for subset in rule.subsets:
        assignment = tuple((f.param, texts[f.param]) for f in subset)
        if all(text is not None for _, text in assignment):
            out.append(tuple((p, t) for p, t in assignment if t is not None))
    return out
