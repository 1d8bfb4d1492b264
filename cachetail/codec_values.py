"""One column value -> its JSON text, from a PyMySQL SELECT ("cold") and from a
python-mysql-replication 1.0.17 row image ("binlog").  See cachetail/codec.py for the
table of forms; this module holds the per-type converters (FLOAT printing: codec_floats.py).

What each path really returns on MariaDB 10.11, where they differ (measured, tested):

- FLOAT: the text protocol rounds to 6 digits; the SELECT casts it to DOUBLE (exact), the
  binlog has the float32.  Both print the shortest text that reads back as that float32.
- TIME: for a negative value with a fraction the library returns ``-(s + 1 - f)`` for
  ``-(s + f)`` (it reads the stored floor and negative fraction as if positive): undone here.
- BINARY(n): the binlog drops trailing 0x00; an empty binary value comes back as ``''``.
- SET: a string ``'a,c'`` from a SELECT, a Python set from the binlog; the empty set is None.
- BIT: bytes from a SELECT, a string of '0'/'1' from the binlog.
- YEAR 0000: 0 from a SELECT, 1900 from the binlog.
- Zero and zero-in-date DATE/DATETIME/TIMESTAMP: a string from a SELECT, None (or
  1970-01-01 00:00:00 for TIMESTAMP) from the binlog: served as null.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import math
import uuid
from collections.abc import Callable
from json.encoder import encode_basestring
from typing import Any

from cachetail.codec_columns import INTEGER_BITS, CodecError, Column
from cachetail.codec_floats import float32_text

Converter = Callable[[Any], str]
NULL = "null"
_EPOCH = dt.datetime(1970, 1, 1)
_MICRO = dt.timedelta(microseconds=1)


# ------------------------------------------------------------------ strings

def json_str(text: str) -> str:
    """A JSON string as ``json.dumps(..., ensure_ascii=False)`` writes it, lone surrogates escaped.
    (``encode_basestring`` is what that call runs for a str, without building an encoder.)"""
    out = encode_basestring(text)
    if not out.isascii():
        try:
            out.encode("utf-8")  # fails on a lone surrogate, and only then
        except UnicodeEncodeError:
            out = "".join(f"\\u{ord(ch):04x}" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in out)
    return out


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return json_str(value)


# ------------------------------------------------------------------- numbers

def _integer(value: Any) -> str:
    if type(value) is not int:
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return str(value)


def _decimal(scale: int) -> Converter:
    exponent = decimal.Decimal(1).scaleb(-scale)
    context = decimal.Context(prec=100)

    def convert(value: Any) -> str:
        if not isinstance(value, decimal.Decimal) or not value.is_finite():
            raise TypeError(f"expected a finite Decimal, got {value!r:.40}")
        return '"' + format(value.quantize(exponent, context=context), "f") + '"'

    return convert


def _finite(value: Any) -> float:
    if not isinstance(value, float) or not math.isfinite(value):
        raise TypeError(f"expected a finite float, got {value!r:.40}")
    return 0.0 if value == 0 else value  # one zero: -0.0 is 0.0


def _double(value: Any) -> str:
    return repr(_finite(value))


def _float(value: Any) -> str:
    return float32_text(_finite(value))


# ------------------------------------------------------------------ temporal

def _date(value: Any) -> str:
    if isinstance(value, str):
        return NULL  # a zero or zero-in-date value PyMySQL could not convert
    if not isinstance(value, dt.date) or isinstance(value, dt.datetime):
        raise TypeError(f"expected a date, got {type(value).__name__}")
    return f'"{value.isoformat()}"'


def _datetime(fsp: int, zone: str) -> Converter:
    def convert(value: Any) -> str:
        if isinstance(value, str):
            return NULL
        if not isinstance(value, dt.datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        if zone and value == _EPOCH:
            return NULL  # TIMESTAMP 0 (the zero timestamp); 1970-01-01 00:00:00 UTC is out of range
        text = value.isoformat(timespec="seconds")
        if fsp:
            text += "." + f"{value.microsecond:06d}"[:fsp]
        return f'"{text}{zone}"'

    return convert


def _time(fsp: int) -> Converter:
    def convert(value: Any) -> str:
        if not isinstance(value, dt.timedelta):
            raise TypeError(f"expected a timedelta, got {type(value).__name__}")
        return time_text(value // _MICRO, fsp)

    return convert


def time_text(micros: int, fsp: int) -> str:
    sign = "-" if micros < 0 else ""
    seconds, fraction = divmod(abs(micros), 1_000_000)
    minutes, second = divmod(seconds, 60)
    hours, minute = divmod(minutes, 60)
    text = f"{sign}{hours:02d}:{minute:02d}:{second:02d}"
    if fsp:
        text += "." + f"{fraction:06d}"[:fsp]
    return f'"{text}"'


def _binlog_time(fsp: int) -> Converter:
    def convert(value: Any) -> str:
        if not isinstance(value, dt.timedelta):
            raise TypeError(f"expected a timedelta, got {type(value).__name__}")
        return time_text(library_time_micros(value // _MICRO), fsp)

    return convert


def library_time_micros(micros: int) -> int:
    """The TIME the binlog holds, from the library's reading of it (see the module docstring)."""
    if micros >= 0:
        return micros
    whole, fraction = divmod(-micros, 1_000_000)
    return micros if not fraction else -(whole * 1_000_000 + 1_000_000 - fraction)


def _year(value: Any) -> str:
    return _integer(value)


def _binlog_year(value: Any) -> str:
    return "0" if value == 1900 else _integer(value)  # YEAR 0000 is stored as 0, read as 1900 + 0


# ---------------------------------------------------------- bit, enum, set

def _bit(value: Any) -> str:
    if not isinstance(value, bytes):
        raise TypeError(f"expected bytes, got {type(value).__name__}")
    return str(int.from_bytes(value, "big"))


def _binlog_bit(value: Any) -> str:
    if not isinstance(value, str) or value.strip("01"):
        raise TypeError(f"expected a string of bits, got {value!r:.40}")
    return str(int(value, 2))


def _set(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    members = value.split(",") if value else []
    return "[" + ",".join(json_str(m) for m in members) + "]"


def _binlog_set(members: tuple[str, ...]) -> Converter:
    order = {m: i for i, m in enumerate(members)}

    def convert(value: Any) -> str:
        if not isinstance(value, (set, frozenset)) or not value <= order.keys():
            raise TypeError(f"expected a set of members, got {value!r:.40}")
        return "[" + ",".join(json_str(m) for m in sorted(value, key=order.__getitem__)) + "]"

    return convert


# ------------------------------------------------------------------ binary

def _bytes(length: int | None) -> Callable[[Any], bytes]:
    def pad(value: Any) -> bytes:
        if value == "":  # the library returns '' for an empty binary value
            value = b""
        if not isinstance(value, bytes):
            raise TypeError(f"expected bytes, got {type(value).__name__}")
        return value.ljust(length, b"\x00") if length else value

    return pad


def _base64(to_bytes: Callable[[Any], bytes]) -> Converter:
    return lambda value: '"' + base64.b64encode(to_bytes(value)).decode("ascii") + '"'


def _uuid(to_bytes: Callable[[Any], bytes]) -> Converter:
    return lambda value: f'"{uuid.UUID(bytes=to_bytes(value))}"'


def fixed_binary_length(column: Column) -> int | None:
    """n for BINARY(n), whose trailing 0x00 the binlog drops; None for the others."""
    return column.char_length if column.data_type == "binary" else None


# -------------------------------------------------------------- JSON column

class _Number(str):
    """A JSON number token, kept exactly as stored."""


class _Object(list[tuple[str, Any]]):
    """A JSON object's members in stored order (duplicates kept)."""


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


def _json_column(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected JSON text, got {type(value).__name__}")
    parsed = json.loads(value, parse_float=_Number, parse_int=_Number, parse_constant=_reject_constant,
                        object_pairs_hook=_Object, strict=False)
    return _emit(parsed)


def _emit(value: Any) -> str:
    if isinstance(value, _Number):
        return str.__str__(value)
    if isinstance(value, str):
        return json_str(value)
    if isinstance(value, _Object):
        return "{" + ",".join(json_str(k) + ":" + _emit(v) for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_emit(v) for v in value) + "]"
    return {None: "null", True: "true", False: "false"}[value]


# ------------------------------------------------------------------- choice

def converters(column: Column) -> tuple[Converter, Converter]:
    """(from a SELECT value, from a binlog value) for a non-NULL value of ``column``."""
    t, fsp = column.data_type, column.fsp or 0
    if t in INTEGER_BITS:
        return _integer, _integer
    if t == "decimal":
        return (_decimal(column.scale or 0),) * 2
    simple: dict[str, tuple[Converter, Converter]] = {
        "float": (_float, _float), "double": (_double, _double), "date": (_date, _date),
        "year": (_year, _binlog_year), "bit": (_bit, _binlog_bit), "enum": (_text, _text),
        "datetime": (_datetime(fsp, ""),) * 2, "timestamp": (_datetime(fsp, "Z"),) * 2,
        "time": (_time(fsp), _binlog_time(fsp)), "set": (_set, _binlog_set(column.members)),
    }
    if t in simple:
        return simple[t]
    if column.is_text:
        return (_json_column, _json_column) if column.is_json else (_text, _text)
    if column.is_binary:
        to_bytes = _bytes(fixed_binary_length(column))
        return (_uuid(to_bytes),) * 2 if t == "binary" and column.char_length == 16 else (_base64(to_bytes),) * 2
    raise CodecError(f"column {column.name!r}: no converter for {column.column_type}")


def select_expression(column: Column, quoted: str) -> str:
    """The SELECT expression of ``column`` (``quoted`` is its backquoted name)."""
    if column.data_type == "float":
        return f"CAST({quoted} AS DOUBLE) AS {quoted}"  # exact: the text protocol rounds FLOAT
    return quoted
