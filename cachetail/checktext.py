"""``cachetail check``'s report as text for a person: one block per entity and list, then the
tables the invalidator follows and the grants as statements to paste into a SQL client."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable

from cachetail.checkreport import WEIGHT, EntityView, FilterView, ListView, Report, Target
from cachetail.grants import DEFAULT_SOURCE

WIDTH = 100
LABEL = 12  # the width of the labels ("redis keys  ")
UNKNOWN = "(known online)"


def render(report: Report) -> str:
    lines = [_headline(report.config, report.target, report.database), ""]
    for entity in report.entities:
        lines += _entity(entity) + [""]
    for listing in report.lists:
        lines += _listing(listing) + [""]
    lines.append(f"tables the invalidator follows, in {report.database}")
    width = max(len(t.name) for t in report.tables)
    for table in report.tables:
        uses = [f"entity {n}" for n in table.entities] + [f"list {n}" for n in table.lists]
        lines.append(f"  {table.name:<{width}}  {', '.join(uses)}")
    lines += ["", "grants (create the accounts as sql/grants.sql does; narrow '%' to your hosts where you can)"]
    for account in report.accounts:
        what = "SELECT on each table" if account.role == "api" else "the binlog, and SELECT on each table"
        named = f"as in {account.source}" if account.source == DEFAULT_SOURCE else f"from {account.source}"
        lines.append(f"  -- the {'API' if account.role == 'api' else 'invalidator'}, {account.name}"
                     f" ({named}): {what}")
        lines += [f"  {statement}" for statement in account.statements]
    return "\n".join(lines) + "\n"


def _headline(source: str, target: Target | None, database: str) -> str:
    if target is None:
        return (f"{source}: valid as written (--offline: tables, columns, keys and types in {database}"
                " not checked)")
    return (f"{source}: valid, checked against {target.database} at {target.host}:{target.port}"
            f" as {target.user} (from {target.user_source})")


def _field(label: str, text: str) -> list[str]:
    indent = " " * (2 + LABEL)
    return textwrap.wrap(text, WIDTH, initial_indent=f"  {label:<{LABEL}}", subsequent_indent=indent,
                         break_on_hyphens=False, break_long_words=False) or [f"  {label}"]


def _more(lines: Iterable[str]) -> list[str]:
    """Lines under the previous field, aligned with its text, never wrapped (keys, statements)."""
    return [" " * (2 + LABEL) + line for line in lines]


def _columns(columns: tuple[str, ...] | None) -> str:
    return "every column of the table, in table order" if columns is None else ", ".join(columns)


def _negative(entity: EntityView) -> str:
    if entity.negative_ttl_s == 0:
        return "a 404 is not cached (negative_ttl_s = 0)"
    if entity.negatives_cached is None:
        return f"a 404 for {entity.negative_ttl_s} s if every key column is exact {UNKNOWN}"
    if entity.negatives_cached:
        return f"a 404 for {entity.negative_ttl_s} s"
    return ("a 404 is not cached: the key's collation finds other spellings, and a row inserted"
            " later under one of them would not clear it")


def _entity(entity: EntityView) -> list[str]:
    lines = [f"entity {entity.name}: table {entity.table}", f"  GET {entity.route}"]
    if entity.nocache_route:
        lines.append(f"  GET {entity.nocache_route}   always from MySQL, never cached")
    width = max(len(k.name) for k in entity.key)
    for i, column in enumerate(entity.key):
        described = f"type {UNKNOWN}" if column.type is None else column.type
        if column.collation:
            described += f" {column.collation}"
        if column.spelling:
            described += f" (in Redis: {column.spelling})"
        lines += _field("key" if i == 0 else "", f"{column.name:<{width}}  {described}")
    inexact = [k for k in entity.key if k.other_spellings]
    if inexact:
        names = ", ".join(f"{k.name} ({k.collation})" for k in inexact)
        lines += _field("spellings", f"the collation of {names} finds a row by other spellings too;"
                                     " a row is cached only under its own")
    lines += _field("columns", _columns(entity.columns))
    lines += _field("ttl", f"{entity.ttl_s} s; {_negative(entity)}")
    lines += _field("near-cache", "on" if entity.nearcache else "off")
    lines += _field("redis key", entity.redis_key)
    return lines


def _filter(f: FilterView) -> str:
    if f.match is None:
        return f"{f.param}: column {f.column}, exact or by collation weight {UNKNOWN}"
    column = f"column {f.column} {f.type}" + (f" {f.collation}" if f.collation else "")
    if f.match != WEIGHT:
        return f"{f.param}: {column}, exact (a variant per value)"
    spaces = "; trailing spaces ignored" if f.pads_spaces else ""
    return (f"{f.param}: {column}, by collation weight (the spellings it treats as equal share"
            f" a variant{spaces})")


def _listing(listing: ListView) -> list[str]:
    params = [f.param for f in listing.filters] + (["after"] if listing.paging else [])
    query = f"   query parameters, each optional: {', '.join(params)}" if params else ""
    lines = [f"list {listing.name}: table {listing.table}", f"  GET {listing.route}{query}"]
    for i, f in enumerate(listing.filters):
        lines += _field("filters" if i == 0 else "", _filter(f))
    lines += _field("order", ", ".join(c[1:] + " descending" if c.startswith("-") else c for c in listing.order))
    lines += _field("limit", f"{listing.limit} rows an answer")
    if listing.paging and listing.cursor:
        lines += _field("paging", f"on: ?after=<cursor>, the cursor being the last row's"
                                  f" {', '.join(listing.cursor)}")
    else:
        lines += _field("paging", "off")
    lines += _field("columns", _columns(listing.columns))
    lines += _field("ttl", f"{listing.ttl_s} s")
    pages = "its first page and the pages after a cursor" if listing.paging else "its first page"
    lines += _field("redis keys", f"{len(listing.variants)} variants, one per subset of the filters; each"
                                  f" holds a generation and {pages}")
    lines += _more(k for v in listing.variants for k in (v.generation, v.first_page, v.later_pages) if k)
    return lines
