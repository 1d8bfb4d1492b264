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

from invalidator import fastrows
from invalidator.apply import Batch
from invalidator.packets import BadRowsEvent, RowsPacket
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
        table.apply_rows(batch, rows, query)
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
    found = _usable(table_map, needed, full_after, event.columns_present_bitmap,
                    getattr(event, "columns_present_bitmap2", None))
    if found is None:
        return None
    data = event.packet.read(event.event_size - event.packet.read_bytes)
    return _rows(found, full_after, operation(event), data, 0, len(data))


def claims(table_map: Any, needed: frozenset[str], full_after: bool) -> bool:
    """Whether rows events of this table map can be read from their bytes (see packets.Filter)."""
    return _usable(table_map, needed, full_after) is not None


def add_packet(batch: Effects, rows: RowsPacket, rules: Mapping[str, TableRules], query: Query) -> str:
    """:func:`add_rows` for a rows event read by the connection (claimed with :func:`claims`)."""
    table = rules.get(rows.table)
    if table is None:
        return "other"
    found = _usable(rows.table_map, table.needed, batch.refresh, rows.present, rows.present2)
    if found is None:
        raise BadRowsEvent(f"rows of {rows.table} were claimed but cannot be read from their bytes")
    if isinstance(batch, Batch):
        plan = fastrows.plan_for(rows.table_map, table, batch.refresh)
        if plan is not None and fastrows.apply(plan, batch.ops, rows.operation, rows.data, rows.start, rows.end):
            return table.table
    table.apply_rows(batch, _rows(found, batch.refresh, rows.operation, rows.data, rows.start, rows.end), query)
    return table.table


def _usable(table_map: Any, needed: frozenset[str], full_after: bool, present: bytes | None = None,
            present2: bytes | None = None) -> Parsers | None:
    found = _parsers_for(table_map, needed)
    if found is None or (full_after and not found.readable):
        return None
    count = len(table_map.columns)
    if present is not None and not _all_present(present, count):
        return None  # not a FULL row image
    if present2 is not None and not _all_present(present2, count):
        return None
    return found


def _rows(found: Parsers, full_after: bool, op: str, data: bytes, offset: int, end: int) -> list[Triple]:
    out, offset = found.rows(op, full_after)(data, offset, end)
    if offset != end:
        raise BadRowsEvent(f"the row images end at {offset}, the event at {end}")
    return out
