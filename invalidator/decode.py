"""A rows event -> its effect on a :class:`~invalidator.apply.Batch`, through the table's rules.

Delete mode needs only the key and filter columns of each image
(:attr:`~invalidator.rules.TableRules.needed`); refresh mode needs the whole after image
too.  :func:`images` reads them straight from the event's bytes with the parsers
:mod:`invalidator.rowparse` generates per table map, the same values the library would
decode, several times cheaper than its decode of every column of both images.  A table
map with a column type the parsers do not size or read, a partial JSON update, or an
image that is not FULL falls back to the library (``event.rows``,
:func:`~cachetail.codec.prepare_binlog_event` first, for MySQL's latin1).  No library
class is patched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pymysqlreplication.constants import BINLOG
from pymysqlreplication.row_event import DeleteRowsEvent, RowsEvent, UpdateRowsEvent, WriteRowsEvent

from cachetail.codec import prepare_binlog_event
from cachetail.codec_columns import prepare_binlog_columns

from invalidator.rowparse import Parsers, parsers
from invalidator.rules import Effects, Query, TableRules

OPERATIONS = {WriteRowsEvent: "insert", UpdateRowsEvent: "update", DeleteRowsEvent: "delete"}
Image = dict[str, Any]
Triple = tuple[Image | None, Image | None, dict[str, str] | None]


def operation(event: RowsEvent) -> str:
    return OPERATIONS.get(type(event), "other")


def add_rows(batch: Effects, event: RowsEvent, rules: Mapping[str, TableRules], query: Query) -> str:
    """Record what ``event`` did to the cache in ``batch``; the table label for metrics."""
    table = rules.get(event.table)
    if table is None:
        return "other"
    rows = images(event, table.needed, full_after=batch.refresh)
    if rows is not None:
        apply = table.apply
        for before, after, sources in rows:
            apply(batch, before, after, query, sources)
        return table.table
    prepare_binlog_event(event)
    if isinstance(event, UpdateRowsEvent):
        for row in event.rows:
            table.apply(batch, row["before_values"], row["after_values"], query,
                        row.get("after_none_sources"))
    elif isinstance(event, WriteRowsEvent):
        for row in event.rows:
            table.apply(batch, None, row["values"], query, row.get("none_sources"))
    else:
        for row in event.rows:
            table.apply(batch, row["values"], None, query)
    return table.table


# --------------------------------------------------------- images from the raw bytes

_parsers: dict[tuple[int, frozenset[str]], tuple[Any, Parsers | None]] = {}


def _parsers_for(table_map: Any, needed: frozenset[str]) -> Parsers | None:
    """The table map's parsers, built once per table map (a DDL brings a new one)."""
    cache_key = (id(table_map), needed)
    cached = _parsers.get(cache_key)
    if cached is not None and cached[0] is table_map:
        return cached[1]
    prepare_binlog_columns(table_map.columns)  # MySQL's latin1, once per table map
    built = None
    if all(c.name is not None for c in table_map.columns):
        built = parsers(table_map.columns, needed)
    if len(_parsers) > 1000:
        _parsers.clear()
    _parsers[cache_key] = (table_map, built)
    return built


def _all_present(bitmap: bytes, count: int) -> bool:
    every = (1 << count) - 1
    return int.from_bytes(bitmap, "little") & every == every


def images(event: RowsEvent, needed: frozenset[str], full_after: bool = False) -> list[Triple] | None:
    """(before, after, after's none_sources) per row, read from the raw event: the ``needed``
    columns of each image, the whole after image with ``full_after``; None when this path
    does not apply (then read ``event.rows``)."""
    if event.event_type == BINLOG.PARTIAL_UPDATE_ROWS_EVENT or event.__dict__.get("_RowsEvent__rows") is not None:
        return None
    table_map = event.table_map[event.table_id]
    found = _parsers_for(table_map, needed)
    if found is None or (full_after and found.full is None):
        return None
    if not (_all_present(event.columns_present_bitmap, len(table_map.columns)) and (
            not isinstance(event, UpdateRowsEvent)
            or _all_present(event.columns_present_bitmap2, len(table_map.columns)))):
        return None  # not a FULL row image
    part = found.needed
    whole = found.full if full_after and found.full is not None else part
    data = event.packet.read(event.event_size - event.packet.read_bytes)
    out: list[Triple] = []
    append = out.append
    offset, end = 0, len(data)
    if isinstance(event, UpdateRowsEvent):
        while offset < end:
            before, _, offset = part(data, offset)
            after, sources, offset = whole(data, offset)
            append((before, after, sources))
    elif isinstance(event, WriteRowsEvent):
        while offset < end:
            after, sources, offset = whole(data, offset)
            append((None, after, sources))
    else:
        while offset < end:
            before, _, offset = part(data, offset)
            append((before, None, None))
    return out
