"""Row images read straight from a rows event's bytes, with code generated per table map.

python-mysql-replication decodes every column of every image through several calls per
column.  Delete mode needs only the key and filter columns; refresh mode needs the after
image whole and the before image's key.  :func:`parser` builds, once per table map, a
function per need that walks an image in straight-line code: fixed-size columns skipped
by their size, length-prefixed ones by their prefix, the needed ones read.  An image
with a NULL takes the generic walk (:func:`_walk`), which shares the column readers.

Values are what the library returns for the same bytes (1.0.17, ``binlog_row_image=FULL``,
strict decoding), and ``none_sources`` what it reports for the None values:
``tests/test_invalidator_rowparse.py`` compares both over every supported type.  A table
map with a column this module cannot size, or a full image with a column type it does
not read (TIME2, NEWDECIMAL, SET, BIT, JSON, GEOMETRY, the old DATETIME/TIME types), gets
no parser for that need: the caller uses the library.
"""

from __future__ import annotations

import codecs
import datetime
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pymysqlreplication.constants import FIELD_TYPE, NONE_SOURCE
from pymysqlreplication.row_event import RowsEvent

Image = dict[str, Any]
Reader = Callable[[bytes, int, int], Any]  # (data, offset, size) -> value
Row = tuple[Image | None, Image | None, dict[str, str] | None]  # before, after, after's none_sources
RowsParser = Callable[[bytes, int, int], tuple[list[Row], int]]  # (data, start, end) -> rows, offset

FIXED = {FIELD_TYPE.TINY: 1, FIELD_TYPE.SHORT: 2, FIELD_TYPE.INT24: 3, FIELD_TYPE.LONG: 4,
         FIELD_TYPE.LONGLONG: 8, FIELD_TYPE.FLOAT: 4, FIELD_TYPE.DOUBLE: 8, FIELD_TYPE.YEAR: 1,
         FIELD_TYPE.DATE: 3, FIELD_TYPE.TIME: 3, FIELD_TYPE.TIMESTAMP: 4, FIELD_TYPE.DATETIME: 8}
WITH_FSP = {FIELD_TYPE.TIME2: 3, FIELD_TYPE.DATETIME2: 5, FIELD_TYPE.TIMESTAMP2: 4}
INT_FORMATS = {(FIELD_TYPE.TINY, False): "<b", (FIELD_TYPE.TINY, True): "<B",
               (FIELD_TYPE.SHORT, False): "<h", (FIELD_TYPE.SHORT, True): "<H",
               (FIELD_TYPE.LONG, False): "<i", (FIELD_TYPE.LONG, True): "<I",
               (FIELD_TYPE.LONGLONG, False): "<q", (FIELD_TYPE.LONGLONG, True): "<Q",
               (FIELD_TYPE.FLOAT, False): "<f", (FIELD_TYPE.FLOAT, True): "<f",
               (FIELD_TYPE.DOUBLE, False): "<d", (FIELD_TYPE.DOUBLE, True): "<d"}
DIG2BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)
FSP_BYTES = (0, 1, 1, 2, 2, 3, 3)


def _decimal_size(precision: int, scale: int) -> int:
    intg = precision - scale
    return (intg // 9) * 4 + DIG2BYTES[intg % 9] + (scale // 9) * 4 + DIG2BYTES[scale % 9]


def column_size(column: Any) -> tuple[int, int] | None:
    """(fixed size, 0) or (0, length-prefix bytes) of one column's value; None if unknown."""
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


# ------------------------------------------------------------------- readers

def _unpacker(fmt: str) -> Reader:
    unpack = struct.Struct(fmt).unpack_from

    def read(data: bytes, offset: int, size: int) -> Any:
        return unpack(data, offset)[0]

    read.unpack = unpack  # type: ignore[attr-defined]  # inlined by the generated code
    return read


def _string(column: Any) -> Reader:
    """As the library's ``__read_string``: the column's encoding (strict), or the bytes when
    Python has no such codec (binary strings), except that an empty value is always ''
    (Python decodes b'' without looking the codec up); UTF-8 when no character set is named."""
    name = column.character_set_name
    encoding = RowsEvent.charset_to_encoding(name) if name is not None else "utf-8"
    try:
        codecs.lookup(encoding)
    except LookupError:
        return lambda data, offset, size: bytes(data[offset:offset + size]) if size else ""
    return lambda data, offset, size: data[offset:offset + size].decode(encoding)


def _int24(unsigned: bool) -> Reader:
    def read(data: bytes, offset: int, size: int) -> int:
        value = data[offset] | data[offset + 1] << 8 | data[offset + 2] << 16
        return value - 0x1000000 if not unsigned and value >= 0x800000 else value
    return read


def _fraction(column: Any) -> Callable[[bytes, int], int]:
    """The microseconds of a TIME2/DATETIME2/TIMESTAMP2 as the library's ``__read_fsp``."""
    fsp = column.fsp
    n = FSP_BYTES[fsp] if 0 <= fsp < len(FSP_BYTES) else 0
    scale: int = 10 ** (6 - fsp)

    def read(data: bytes, offset: int) -> int:
        if n == 0:
            return 0
        micro = int.from_bytes(data[offset:offset + n], "big", signed=True)
        if fsp % 2:
            micro = int(micro / 10)
        return micro * scale
    return read


SECONDS_KEPT = 1 << 16  # converted TIMESTAMP seconds remembered (a busy table repeats them)


def _timestamp2(column: Any) -> Reader:
    fraction = _fraction(column)
    utc = datetime.datetime.utcfromtimestamp
    seen: dict[int, datetime.datetime] = {}  # datetimes are immutable: one object serves all

    def read(data: bytes, offset: int, size: int) -> datetime.datetime:
        seconds = int.from_bytes(data[offset:offset + 4], "big", signed=True)
        value = seen.get(seconds)
        if value is None:
            if len(seen) >= SECONDS_KEPT:
                seen.clear()
            value = seen[seconds] = utc(seconds)
        micro = fraction(data, offset + 4)
        return value.replace(microsecond=micro) if micro > 0 else value
    return read


class _OutOfRange(Exception):
    """A value the library decodes to None, with its none source."""

    def __init__(self, source: str) -> None:
        self.source = source


def _datetime2(column: Any) -> Reader:
    fraction = _fraction(column)

    def read(data: bytes, offset: int, size: int) -> datetime.datetime:
        b = int.from_bytes(data[offset:offset + 5], "big")
        year_month = (b >> 22) & 0x1FFFF
        try:
            value = datetime.datetime(year=int(year_month / 13), month=year_month % 13,
                                      day=(b >> 17) & 0x1F, hour=(b >> 12) & 0x1F,
                                      minute=(b >> 6) & 0x3F, second=b & 0x3F)
        except ValueError:
            raise _OutOfRange(NONE_SOURCE.OUT_OF_DATETIME2_RANGE) from None
        micro = fraction(data, offset + 5)
        return value.replace(microsecond=micro) if micro > 0 else value

    read.out_of_range = True  # type: ignore[attr-defined]  # a mark on the function the generated code checks
    return read


def _date(data: bytes, offset: int, size: int) -> datetime.date:
    value = data[offset] | data[offset + 1] << 8 | data[offset + 2] << 16
    year, month, day = (value >> 9) & 0x7FFF, (value >> 5) & 0xF, value & 0x1F
    if value == 0 or year == 0 or month == 0 or day == 0:
        raise _OutOfRange(NONE_SOURCE.OUT_OF_DATE_RANGE)
    return datetime.date(year=year, month=month, day=day)


_date.out_of_range = True  # type: ignore[attr-defined]  # a mark on the function the generated code checks


def _year(data: bytes, offset: int, size: int) -> int:
    return data[offset] + 1900


def _enum(column: Any) -> Reader | None:
    """The member at the stored index (1 or 2 bytes), from the table map's metadata: the
    library's ``enum_values`` ('' at 0, the error value, then the members in order)."""
    members = column.enum_values
    if not members:
        return None  # no member names in the table map (binlog_row_metadata not FULL)
    width = column.size

    def read(data: bytes, offset: int, size: int) -> str:
        return members[int.from_bytes(data[offset:offset + width], "little")]  # type: ignore[no-any-return]  # the library's column is unannotated
    return read


def reader(column: Any) -> Reader | None:
    """The library's value of one column from its bytes; None for a type not read here."""
    t = column.type
    if t == FIELD_TYPE.INT24:
        return _int24(bool(column.unsigned))
    fmt = INT_FORMATS.get((t, bool(column.unsigned)))
    if fmt is not None:
        return _unpacker(fmt)
    if t in (FIELD_TYPE.VARCHAR, FIELD_TYPE.STRING) and hasattr(column, "max_length"):
        return _string(column)
    if t == FIELD_TYPE.BLOB:
        return _string(column)
    if t == FIELD_TYPE.TIMESTAMP2:
        return _timestamp2(column)
    if t == FIELD_TYPE.DATETIME2:
        return _datetime2(column)
    if t == FIELD_TYPE.DATE:
        return _date
    if t == FIELD_TYPE.YEAR:
        return _year
    if t == FIELD_TYPE.ENUM:
        return _enum(column)
    return None


# ----------------------------------------------------------------- walking

@dataclass(frozen=True)
class _Column:
    name: str
    size: int  # fixed size, 0 when length-prefixed
    prefix: int  # length-prefix bytes
    read: Reader | None  # None: skipped


def _walk(columns: Sequence[_Column], data: bytes, offset: int) -> tuple[Image, dict[str, str], int]:
    """Any image (NULLs too): every column present (FULL row image)."""
    nbytes = (len(columns) + 7) // 8
    nulls = int.from_bytes(data[offset:offset + nbytes], "little")
    offset += nbytes
    image: Image = {}
    sources: dict[str, str] = {}
    for i, c in enumerate(columns):
        if nulls >> i & 1:
            if c.read is not None:
                image[c.name] = None
                sources[c.name] = NONE_SOURCE.NULL
            continue
        if c.prefix:
            size = int.from_bytes(data[offset:offset + c.prefix], "little")
            start = offset + c.prefix
        else:
            size, start = c.size, offset
        offset = start + size
        if c.read is not None:
            try:
                image[c.name] = c.read(data, start, size)
            except _OutOfRange as exc:
                image[c.name] = None
                sources[c.name] = exc.source
    return image, sources, offset


def _image_lines(columns: Sequence[_Column], tag: str, whole: bool, env: dict[str, Any]) -> list[str]:
    """Code reading one image at ``o`` into ``img_<tag>`` (and ``src_<tag>`` when whole):
    straight-line without NULLs, the generic walk with them."""
    nbytes = (len(columns) + 7) // 8
    env[f"columns_{tag}"] = tuple(columns)
    mask = (1 << len(columns)) - 1  # the bitmap's spare bits are not NULLs (they may be set)
    test = f"data[o] & {mask}" if nbytes == 1 else f"int.from_bytes(data[o:o + {nbytes}], 'little') & {mask}"
    lines = [f"if {test}:",
             f"    img_{tag}, src_{tag}, o = walk(columns_{tag}, data, o)",
             "else:",
             f"    o += {nbytes}"]
    if whole:
        lines.append(f"    src_{tag} = {{}}")
    pending = 0  # fixed bytes to skip before the next column
    values = []
    for i, c in enumerate(columns):
        if c.read is None and not c.prefix:
            pending += c.size
            continue
        if pending:
            lines.append(f"    o += {pending}")
            pending = 0
        name = f"{tag}{i}"
        unpack = getattr(c.read, "unpack", None)
        if unpack is not None and not c.prefix:
            env[f"u_{name}"] = unpack
            lines.append(f"    v_{name} = u_{name}(data, o)[0]; o += {c.size}")
            values.append((c.name, f"v_{name}"))
            continue
        if c.prefix == 1:
            lines.append("    n = data[o]; o += 1")
        elif c.prefix:
            lines.append(f"    n = int.from_bytes(data[o:o + {c.prefix}], 'little'); o += {c.prefix}")
        else:
            lines.append(f"    n = {c.size}")
        if c.read is not None:
            env[f"r_{name}"] = c.read
            if getattr(c.read, "out_of_range", False):
                lines += ["    try:",
                          f"        v_{name} = r_{name}(data, o, n)",
                          "    except OutOfRange as exc:",
                          f"        v_{name} = None"]
                if whole:
                    lines.append(f"        src_{tag}[{c.name!r}] = exc.source")
            else:
                lines.append(f"    v_{name} = r_{name}(data, o, n)")
            values.append((c.name, f"v_{name}"))
        lines.append("    o += n")
    if pending:
        lines.append(f"    o += {pending}")
    lines.append(f"    img_{tag} = {{" + ", ".join(f"{k!r}: {v}" for k, v in values) + "}")
    return lines


def _rows_function(operation: str, part: Sequence[_Column], whole: Sequence[_Column], full: bool) -> RowsParser:
    """Every row of a rows event: (before, after, after's none_sources) each, before with the
    ``part`` columns, after with the ``whole`` ones (``full``: all of them, sources kept)."""
    env: dict[str, Any] = {"walk": _walk, "OutOfRange": _OutOfRange}
    body: list[str] = []
    if operation == "update":
        body += _image_lines(part, "b", False, env) + _image_lines(whole, "a", full, env)
        row = "(img_b, img_a, src_a)" if full else "(img_b, img_a, None)"
    elif operation == "insert":
        body += _image_lines(whole, "a", full, env)
        row = "(None, img_a, src_a)" if full else "(None, img_a, None)"
    else:
        body += _image_lines(part, "b", False, env)
        row = "(img_b, None, None)"
    lines = ["def rows(data, o, end):",
             "    out = []",
             "    append = out.append",
             "    while o < end:",
             *("        " + line for line in body),
             f"        append({row})",
             "    return out, o"]
    exec(compile("\n".join(lines), f"<rowparse {operation} {len(whole)} columns>", "exec"), env)  # noqa: S102 - the generated parser: built from the table map, never from input
    rows: RowsParser = env["rows"]
    return rows


@dataclass(frozen=True)
class Parsers:
    """For one table map: the rows of an event, by operation, with the needed columns of each
    image or (``full``, when every column is readable) the whole after image."""

    readable: bool  # the whole image can be read (refresh mode)
    _functions: dict[tuple[str, bool], RowsParser]

    def rows(self, operation: str, full: bool) -> RowsParser:
        return self._functions[(operation, full and self.readable)]


def parsers(table_columns: Sequence[Any], needed: frozenset[str]) -> Parsers | None:
    """None when some column cannot be sized or a needed one cannot be read."""
    sizes = [column_size(c) for c in table_columns]
    if any(s is None for s in sizes) or not needed <= {c.name for c in table_columns}:
        return None
    readers = [reader(c) for c in table_columns]
    if any(r is None for c, r in zip(table_columns, readers, strict=True) if c.name in needed):
        return None
    part = [_Column(c.name, s[0], s[1], r if c.name in needed else None)  # type: ignore[index]  # sizes: none is None (checked above)
            for c, s, r in zip(table_columns, sizes, readers, strict=True)]
    readable = all(r is not None for r in readers)
    whole = [_Column(c.name, s[0], s[1], r)  # type: ignore[index]  # sizes: none is None (checked above)
             for c, s, r in zip(table_columns, sizes, readers, strict=True)]
    functions = {}
    for operation in ("insert", "update", "delete"):
        functions[(operation, False)] = _rows_function(operation, part, part, False)
        if readable:
            functions[(operation, True)] = _rows_function(operation, part, whole, True)
    return Parsers(readable, functions)
