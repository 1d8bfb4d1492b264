"""What ``cachetail check`` reports about a declaration: routes, keys, Redis keys, tables, grants.

:func:`build` describes a declaration from its resolved :class:`~cachetail.schema.Catalog`
(checked against the database) or, offline, from the :class:`~cachetail.config.Config`
alone (then column types, collations and whether a 404 is cached are unknown: None).
Every Redis key pattern is built by :class:`~cachetail.keyspace.Keyspace` from placeholders
such as ``<id>``, as the API and the invalidator build the real keys.  The report is plain
data: ``dataclasses.asdict`` gives the ``--json`` output, :mod:`cachetail.checktext` the text.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from cachetail.codec import Column
from cachetail.collation import is_exact, pads_spaces
from cachetail.config import Config, EntitySpec, ListSpec, Routed
from cachetail.grants import Account
from cachetail.keyspace import Keyspace
from cachetail.schema import Catalog, Entity, Listing

EXACT = "exact"
WEIGHT = "collation weight"


@dataclass(frozen=True)
class Target:
    """Where the declaration was checked."""

    host: str
    port: int
    database: str
    user: str
    user_source: str  # the variable the account came from


@dataclass(frozen=True)
class KeyColumn:
    name: str
    type: str | None  # "varchar(32)"; None offline
    collation: str | None
    spelling: str | None  # how its value is spelled in the Redis key
    other_spellings: bool | None  # its collation finds the row by other spellings (c00042 for C00042)


@dataclass(frozen=True)
class EntityView(Routed):
    nocache_route: str | None
    key: tuple[KeyColumn, ...]
    columns: tuple[str, ...] | None  # None: every column (offline, undeclared)
    ttl_s: int
    negative_ttl_s: int
    negatives_cached: bool | None  # whether a 404 is cached at all; None offline
    nearcache: bool
    redis_key: str


@dataclass(frozen=True)
class FilterView:
    param: str
    column: str
    type: str | None
    collation: str | None
    match: str | None  # EXACT or WEIGHT; None offline
    pads_spaces: bool | None  # WEIGHT: trailing spaces do not count


@dataclass(frozen=True)
class VariantKeys:
    params: tuple[str, ...]  # the filters this variant sets
    generation: str
    first_page: str
    later_pages: str | None  # paging: the page after a cursor


@dataclass(frozen=True)
class ListView(Routed):
    filters: tuple[FilterView, ...]
    order: tuple[str, ...]  # "-col": descending
    limit: int
    paging: bool
    cursor: tuple[str, ...] | None  # the columns a cursor holds
    columns: tuple[str, ...] | None
    ttl_s: int
    variants: tuple[VariantKeys, ...]


@dataclass(frozen=True)
class TableView:
    name: str
    entities: tuple[str, ...]
    lists: tuple[str, ...]


@dataclass(frozen=True)
class Report:
    config: str
    database: str
    target: Target | None  # None: --offline
    entities: tuple[EntityView, ...]
    lists: tuple[ListView, ...]
    tables: tuple[TableView, ...]  # the tables the invalidator follows
    accounts: tuple[Account, ...]


def build(config: Config, catalog: Catalog | None, keyspace: Keyspace, database: str,
          target: Target | None, accounts: Sequence[Account]) -> Report:
    resolved_entities = {e.name: e for e in catalog.entities} if catalog else {}
    resolved_lists = {x.name: x for x in catalog.lists} if catalog else {}
    entities = tuple(_entity(s, resolved_entities.get(s.name), keyspace) for s in config.entities)
    lists = tuple(_listing(s, resolved_lists.get(s.name), keyspace) for s in config.lists)
    tables = tuple(TableView(t, tuple(e.name for e in config.entities if e.table == t),
                             tuple(x.name for x in config.lists if x.table == t)) for t in config.tables)
    return Report(config.source, database, target, entities, lists, tables, tuple(accounts))


def placeholder(name: str) -> str:
    return f"<{name}>"


# ------------------------------------------------------------------ entities


def key_spelling(column: Column) -> str:
    """How a key column's value is spelled in the Redis key (cachetail/codec_keys.py)."""
    if column.integer_bits:
        return "decimal"
    if column.data_type == "binary" and column.char_length == 16:
        return "32 lowercase hex digits; the path takes them or the dashed UUID"
    if column.is_binary:
        return "lowercase hex of its bytes"
    if column.data_type == "date":
        return "YYYY-MM-DD"
    if column.data_type == "enum":
        return "percent-encoded UTF-8 of the member"
    return "percent-encoded UTF-8 of the row's own value"


def other_spellings(column: Column) -> bool:
    """Whether the column's collation finds a row by spellings other than its own."""
    return (column.is_text or column.data_type == "enum") and not is_exact(column.charset, column.collation)


def _entity(spec: EntitySpec, entity: Entity | None, keyspace: Keyspace) -> EntityView:
    if entity is None:
        key = tuple(KeyColumn(name, None, None, None, None) for name in spec.key)
        columns, negatives = spec.columns, None
    else:
        key = tuple(KeyColumn(c.name, c.column_type, c.collation, key_spelling(c), other_spellings(c))
                    for c in entity.keys.columns)
        columns, negatives = tuple(c.name for c in entity.columns), entity.negatives
    text = ":".join(placeholder(name) for name in spec.key)
    return EntityView(spec.name, spec.table, spec.route, spec.nocache_route, key, columns, spec.ttl_s,
                      spec.negative_ttl_s, negatives, spec.nearcache, keyspace.row(spec.key_tag, text))


# --------------------------------------------------------------------- lists


def _filters(spec: ListSpec, listing: Listing | None) -> tuple[FilterView, ...]:
    if listing is None:
        return tuple(FilterView(param, column, None, None, None, None) for param, column in spec.filters)
    out = []
    for f in listing.filters:
        weighed = f.by_weight
        out.append(FilterView(f.param, f.column.name, f.column.column_type, f.column.collation,
                              WEIGHT if weighed else EXACT,
                              pads_spaces(f.column.collation or "") if weighed else None))
    return tuple(out)


def _value_text(f: FilterView) -> str:
    """The placeholder for a filter value in a variant's name: the value itself (integers,
    exact strings percent-encoded) or ``~`` and the hex of its collation weight."""
    if f.match == WEIGHT:
        return "~" + placeholder(f"weight({f.column})")
    return placeholder(f.column)


def _variants(spec: ListSpec, filters: tuple[FilterView, ...], keyspace: Keyspace) -> tuple[VariantKeys, ...]:
    """One variant per subset of the filters, in declared order (what a row change bumps)."""
    cursor = ":".join(placeholder(c) for c, _ in spec.order) if spec.paging else None
    out = []
    subsets = (c for n in range(len(filters) + 1) for c in itertools.combinations(filters, n))
    for chosen in subsets:
        variant = Keyspace.variant(spec.key_tag, tuple((f.param, _value_text(f)) for f in chosen))
        out.append(VariantKeys(tuple(f.param for f in chosen), keyspace.list_generation(variant),
                               keyspace.list_page(variant),
                               None if cursor is None else keyspace.list_page(variant, cursor)))
    return tuple(out)


def _listing(spec: ListSpec, listing: Listing | None, keyspace: Keyspace) -> ListView:
    filters = _filters(spec, listing)
    columns = spec.columns if listing is None else tuple(c.name for c in listing.columns)
    cursor = listing.cursor.names if listing is not None and listing.cursor is not None else (
        tuple(c for c, _ in spec.order) if spec.paging else None)
    return ListView(spec.name, spec.table, spec.route, filters,
                    tuple(("-" if desc else "") + c for c, desc in spec.order), spec.limit, spec.paging,
                    cursor, columns, spec.ttl_s, _variants(spec, filters, keyspace))
