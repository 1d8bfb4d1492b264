"""A rows event -> its effect on a :class:`~invalidator.apply.Batch`, through the table's rules.

Refresh mode needs every served column of the after image: the library decodes the
rows (lazily, on ``event.rows``; :func:`~cachetail.codec.prepare_binlog_event` first, for
MySQL's latin1).  Delete mode needs only the key and filter columns
(:attr:`~invalidator.rules.TableRules.needed`): :func:`images` reads just those straight
from the event's bytes and skips the others by their binlog sizes, several times cheaper
than the library's full decode of both images.  Integers are unpacked as the library
unpacks them; strings and binary strings are decoded as its ``__read_string`` decodes
them.  A table map with a column type the skipper does not know, or a needed column of
another type, falls back to the library.  No library class is patched.
"""

from __future__ import annotations

import codecs
import struct
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from pymysqlreplication.constants import BINLOG, FIELD_TYPE
from pymysqlreplication.row_event import DeleteRowsEvent, RowsEvent, UpdateRowsEvent, WriteRowsEvent

from cachetail.codec import prepare_binlog_event
from cachetail.codec_columns import prepare_binlog_columns

from invalidator.rules import Effects, Query, TableRules

OPERATIONS = {WriteRowsEvent: "insert", UpdateRowsEvent: "update", DeleteRowsEvent: "delete"}
Image = dict[str, Any]
Pair = tuple[Image | None, Image | None]


def operation(event: RowsEvent) -> str:
    return OPERATIONS.get(type(event), "other")


def add_rows(batch: Effects, event: RowsEvent, rules: Mapping[str, TableRules], query: Query) -> str:
    """Record what ``event`` did to the cache in ``batch``; the table label for metrics."""
    table = rules.get(event.table)
    if table is None:
        return "other"
    if not batch.refresh:
        pairs = images(event, table.needed)
        if pairs is not None:
            for before, after in pairs:
                table.apply(batch, before, after, query)
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


# ------------------------------------------------------- needed-columns fast path

FIXED = {FIELD_TYPE.TINY: 1, FIELD_TYPE.SHORT: 2, FIELD_TYPE.INT24: 3, FIELD_TYPE.LONG: 4,
         FIELD_TYPE.LONGLONG: 8, FIELD_TYPE.FLOAT: 4, FIELD_TYPE.DOUBLE: 8, FIELD_TYPE.YEAR: 1,
         FIELD_TYPE.DATE: 3, FIELD_TYPE.TIME: 3, FIELD_TYPE.TIMESTAMP: 4, FIELD_TYPE.DATETIME: 8}
WITH_FSP = {FIELD_TYPE.TIME2: 3, FIELD_TYPE.DATETIME2: 5, FIELD_TYPE.TIMESTAMP2: 4}
INT_FORMATS = {(FIELD_TYPE.TINY, False): "<b", (FIELD_TYPE.TINY, True): "<B",
               (FIELD_TYPE.SHORT, False): "<h", (FIELD_TYPE.SHORT, True): "<H",
               (FIELD_TYPE.LONG, False): "<i", (FIELD_TYPE.LONG, True): "<I",
               (FIELD_TYPE.LONGLONG, False): "<q", (FIELD_TYPE.LONGLONG, True): "<Q"}
DIG2BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)
Reader = Callable[[bytes, int, int], Any]  # (data, offset, size) -> value
Layout = tuple[tuple[tuple[int, int, str | None, Reader | None], ...], ...]
_layouts: dict[tuple[int, frozenset[str]], tuple[Any, Layout | None]] = {}


def _decimal_size(precision: int, scale: int) -> int:
    intg = precision - scale
    return (intg // 9) * 4 + DIG2BYTES[intg % 9] + (scale // 9) * 4 + DIG2BYTES[scale % 9]


def _column_layout(column: Any) -> tuple[int, int] | None:
    """(fixed size, 0) or (0, length-prefix bytes) for one column; None if unknown."""
    t = column.type
    if t in FIXED:
        return FIXED[t], 0
    if t in WITH_FSP:
        return WITH_FSP[t] + (column.fsp + 1) // 2, 0
    if t == FIELD_TYPE.NEWDECIMAL:
        return _decimal_size(column.precision, column.decimals), 0
    if t in (FIELD_TYPE.VARCHAR, FIELD_TYPE.STRING) and hasattr(column, "max_length"):
        return 0, 2 if column.max_length > 255 else 1
    if t in (FIELD_TYPE.BLOB, FIELD_TYPE.JSON, FIELD_TYPE.GEOMETRY):
        return 0, column.length_size
    if t in (FIELD_TYPE.ENUM, FIELD_TYPE.SET):
        return column.size, 0
    if t == FIELD_TYPE.BIT:
        return column.bytes, 0
    return None


def _int_reader(fmt: str) -> Reader:
    unpack = struct.Struct(fmt).unpack_from
    return lambda data, offset, size: unpack(data, offset)[0]


def _string_reader(column: Any) -> Reader:
    """As the library's ``__read_string``: the column's encoding, or the bytes for binary."""
    name = column.character_set_name
    encoding = RowsEvent.charset_to_encoding(name) if name is not None else "utf-8"
    try:
        codecs.lookup(encoding)
    except LookupError:
        return lambda data, offset, size: bytes(data[offset:offset + size])
    return lambda data, offset, size: data[offset:offset + size].decode(encoding)


def _reader(column: Any) -> Reader | None:
    if column.type in (FIELD_TYPE.VARCHAR, FIELD_TYPE.STRING) and hasattr(column, "max_length"):
        return _string_reader(column)
    fmt = INT_FORMATS.get((column.type, bool(column.unsigned)))
    return None if fmt is None else _int_reader(fmt)


def _layout(table_map: Any, needed: frozenset[str]) -> Layout | None:
    """Per column (size, prefix bytes, name if needed, reader if needed), per table map."""
    cache_key = (id(table_map), needed)
    cached = _layouts.get(cache_key)
    if cached is not None and cached[0] is table_map:
        return cached[1]
    layout: Layout | None = None
    prepare_binlog_columns(table_map.columns)  # MySQL's latin1, once per table map
    sizes = [_column_layout(c) for c in table_map.columns]
    readers = [(_reader(c) if c.name in needed else None) for c in table_map.columns]
    names = {c.name for c in table_map.columns}
    known = [s for s in sizes if s is not None]
    if len(known) == len(sizes) and needed <= names and all(
            r is not None for c, r in zip(table_map.columns, readers) if c.name in needed):
        layout = (tuple((size, prefix, c.name if c.name in needed else None, reader)
                        for (size, prefix), c, reader in zip(known, table_map.columns, readers)),)
    if len(_layouts) > 1000:
        _layouts.clear()
    _layouts[cache_key] = (table_map, layout)
    return layout


def _image(data: bytes, offset: int, present: bytes, layout: Layout) -> tuple[Image, int]:
    """The needed columns of the row image at ``offset``, and the offset after the image."""
    (columns,) = layout
    count = sum(bin(b).count("1") for b in present)
    nulls = data[offset:offset + (count + 7) // 8]
    offset += (count + 7) // 8
    found: Image = {}
    n = 0  # index among present columns (the null bitmap counts only those)
    for i, (size, prefix, name, reader) in enumerate(columns):
        if not present[i >> 3] & (1 << (i & 7)):
            continue
        is_null = nulls[n >> 3] & (1 << (n & 7))
        n += 1
        if is_null:
            if name is not None:
                found[name] = None
            continue
        start = offset
        if prefix:
            size = int.from_bytes(data[offset:offset + prefix], "little")
            start = offset + prefix
            offset = start + size
        else:
            offset += size
        if reader is not None:
            found[name] = reader(data, start, size)  # type: ignore[index]
    return found, offset


def images(event: RowsEvent, needed: frozenset[str]) -> Iterator[Pair] | None:
    """(before, after) images holding the ``needed`` columns, from the raw event; None when
    the fast path does not apply (then read ``event.rows``)."""
    if event.event_type == BINLOG.PARTIAL_UPDATE_ROWS_EVENT or event.__dict__.get("_RowsEvent__rows") is not None:
        return None
    layout = _layout(event.table_map[event.table_id], needed)
    if layout is None:
        return None
    data = event.packet.read(event.event_size - event.packet.read_bytes)
    out: list[Pair] = []
    offset, end = 0, len(data)
    if isinstance(event, UpdateRowsEvent):
        while offset < end:
            before, offset = _image(data, offset, event.columns_present_bitmap, layout)
            after, offset = _image(data, offset, event.columns_present_bitmap2, layout)
            out.append((before, after))
    elif isinstance(event, WriteRowsEvent):
        while offset < end:
            after, offset = _image(data, offset, event.columns_present_bitmap, layout)
            out.append((None, after))
    else:
        while offset < end:
            before, offset = _image(data, offset, event.columns_present_bitmap, layout)
            out.append((before, None))
    return iter(out)
