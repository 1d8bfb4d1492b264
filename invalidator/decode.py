"""A rows event -> its effect on a :class:`~invalidator.apply.Batch`.

Products: any row means "bump the generation"; the rows are never decoded.
Users: delete mode needs only the ids of the before and after images; refresh
mode needs the after image's columns.  Rows are decoded by the library
(lazily, on ``event.rows``); TIMESTAMP columns come back as naive UTC
datetimes (``utcfromtimestamp``) and DECIMAL as ``Decimal``, exactly what a
PyMySQL SELECT with ``time_zone='+00:00'`` returns, so ``serialize_user``
gives the same bytes for both (tested).

Delete mode reads only the ``id`` of each row image straight from the event's
bytes (:func:`user_ids`): the other columns are skipped by their binlog sizes,
not decoded, which makes a users event several times cheaper than the
library's full decode of both images.  An event with a column type the skipper
does not know falls back to the library.  No library class is patched.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

from pymysqlreplication.constants import BINLOG, FIELD_TYPE
from pymysqlreplication.row_event import DeleteRowsEvent, RowsEvent, UpdateRowsEvent, WriteRowsEvent

from cachetail.keyspace import PRODUCTS_TABLE, USERS_TABLE

from invalidator.apply import Batch

OPERATIONS = {WriteRowsEvent: "insert", UpdateRowsEvent: "update", DeleteRowsEvent: "delete"}


def operation(event: RowsEvent) -> str:
    return OPERATIONS.get(type(event), "other")


def table_label(event: RowsEvent) -> str:
    return event.table if event.table in (USERS_TABLE, PRODUCTS_TABLE) else "other"


def add_rows(batch: Batch, event: RowsEvent) -> None:
    """Record what ``event`` did to the cache in ``batch``."""
    batch.row_events += 1
    if event.table == PRODUCTS_TABLE:
        batch.products = True
        return
    if event.table != USERS_TABLE:
        return
    if not batch.refresh:
        ids = user_ids(event)
        if ids is not None:
            for before_id, after_id in ids:
                batch.user_changed(before_id, after_id)
            return
    if isinstance(event, UpdateRowsEvent):
        for row in event.rows:
            before, after = row["before_values"], row["after_values"]
            batch.user_changed(_id(before), _id(after), after)
    elif isinstance(event, WriteRowsEvent):
        for row in event.rows:
            batch.user_changed(None, _id(row["values"]), row["values"])
    else:
        for row in event.rows:
            batch.user_changed(_id(row["values"]), None)


def _id(values: dict[str, Any]) -> int | None:
    value = values.get("id")
    return None if value is None else int(value)


# ------------------------------------------------------------ id-only fast path

FIXED = {FIELD_TYPE.TINY: 1, FIELD_TYPE.SHORT: 2, FIELD_TYPE.INT24: 3, FIELD_TYPE.LONG: 4,
         FIELD_TYPE.LONGLONG: 8, FIELD_TYPE.FLOAT: 4, FIELD_TYPE.DOUBLE: 8, FIELD_TYPE.YEAR: 1,
         FIELD_TYPE.DATE: 3, FIELD_TYPE.TIME: 3, FIELD_TYPE.TIMESTAMP: 4, FIELD_TYPE.DATETIME: 8}
WITH_FSP = {FIELD_TYPE.TIME2: 3, FIELD_TYPE.DATETIME2: 5, FIELD_TYPE.TIMESTAMP2: 4}
INT_FORMATS = {(FIELD_TYPE.TINY, False): "<b", (FIELD_TYPE.TINY, True): "<B",
               (FIELD_TYPE.SHORT, False): "<h", (FIELD_TYPE.SHORT, True): "<H",
               (FIELD_TYPE.LONG, False): "<i", (FIELD_TYPE.LONG, True): "<I",
               (FIELD_TYPE.LONGLONG, False): "<q", (FIELD_TYPE.LONGLONG, True): "<Q"}
DIG2BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)
_layouts: dict[int, tuple[Any, Any]] = {}  # id(Table) -> (table, layout or None)


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


def _layout(table: Any) -> tuple[int, str, list[tuple[int, int]]] | None:
    """(index of id, its struct format, per-column layout) of a table, cached per table map."""
    cached = _layouts.get(id(table))
    if cached is not None and cached[0] is table:
        return cached[1]
    layout = None
    names = [c.name for c in table.columns]
    columns = [_column_layout(c) for c in table.columns]
    if "id" in names and None not in columns:
        index = names.index("id")
        fmt = INT_FORMATS.get((table.columns[index].type, bool(table.columns[index].unsigned)))
        if fmt is not None:
            layout = (index, fmt, columns)
    if len(_layouts) > 1000:
        _layouts.clear()
    _layouts[id(table)] = (table, layout)
    return layout


def _image_id(data: bytes, offset: int, present: bytes, layout: tuple[int, str, list[tuple[int, int]]]
              ) -> tuple[int | None, int]:
    """The id in the row image at ``offset`` and the offset after the image."""
    id_index, fmt, columns = layout
    count = sum(bin(b).count("1") for b in present)
    nulls = data[offset:offset + (count + 7) // 8]
    offset += (count + 7) // 8
    found: int | None = None
    n = 0  # index among present columns (the null bitmap counts only those)
    for i, (size, prefix) in enumerate(columns):
        if not present[i >> 3] & (1 << (i & 7)):
            continue
        is_null = nulls[n >> 3] & (1 << (n & 7))
        n += 1
        if is_null:
            continue
        if i == id_index:
            found = struct.unpack_from(fmt, data, offset)[0]
        if prefix:
            size = int.from_bytes(data[offset:offset + prefix], "little") + prefix
        offset += size
    return found, offset


def user_ids(event: RowsEvent) -> Iterator[tuple[int | None, int | None]] | None:
    """(before id, after id) per row, from the raw row images; None when the fast path does not apply."""
    if event.event_type == BINLOG.PARTIAL_UPDATE_ROWS_EVENT or event.__dict__.get("_RowsEvent__rows") is not None:
        return None
    layout = _layout(event.table_map[event.table_id])
    if layout is None:
        return None
    data = event.packet.read(event.event_size - event.packet.read_bytes)
    out: list[tuple[int | None, int | None]] = []
    offset, end = 0, len(data)
    if isinstance(event, UpdateRowsEvent):
        while offset < end:
            before, offset = _image_id(data, offset, event.columns_present_bitmap, layout)
            after, offset = _image_id(data, offset, event.columns_present_bitmap2, layout)
            out.append((before, after))
    elif isinstance(event, WriteRowsEvent):
        while offset < end:
            after, offset = _image_id(data, offset, event.columns_present_bitmap, layout)
            out.append((None, after))
    else:
        while offset < end:
            before, offset = _image_id(data, offset, event.columns_present_bitmap, layout)
            out.append((before, None))
    return iter(out)
