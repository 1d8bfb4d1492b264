"""Entity keys and list filters: URL parameters -> WHERE values, and the canonical text.

A key is 1 to 3 NOT NULL columns of a primary or unique key: integers (any width, signed or
unsigned), CHAR / VARCHAR (utf8mb4, utf8mb3, latin1, ascii), BINARY / VARBINARY, ENUM.  A
list filter may also be a DATE.  The text, the part of the Redis key after the entity's tag
(or a variant's value), joins one part per column with ':':

- integers in decimal (``-5``, ``18446744073709551615``);
- strings (and ENUM members) as the percent-encoded UTF-8 of the exact value (``caf%C3%A9``):
  ':' '{' '}' '%' and every non-ASCII character are encoded, so parts never run into each other;
- binary as lowercase hex of all its bytes (a BINARY(n) with its 0x00 padding);
- dates as ``2024-02-29``.

SET, DATETIME, TIMESTAMP and TIME columns filter no list (:func:`unsupported_filter` says
why, in the line a bad declaration gets).

The text is the same for a row read by a SELECT, for its binlog image and for the parsed
path parameters that spell it exactly.

The collation rule.  Under a case- or accent-insensitive collation, or a PAD SPACE one
(every MariaDB collation without ``nopad`` in its name, ``_bin`` ones included), the
spellings ``abc``, ``ABC`` and ``ABC%20`` find the same row ``ABC``; the invalidator only
ever sees ``ABC``.  So:

1. a row is stored only under its own key text: the API stores a fill only when
   ``canonical(requested, row)`` holds; another spelling is answered uncached (or redirected);
2. a 404 is cached only when ``negatives_cacheable``: every key column is an integer, a
   binary string, or a string under a binary NO PAD collation (``utf8mb4_nopad_bin``,
   MySQL's ``utf8mb4_0900_bin``).  Under any other collation a spelling that finds nothing
   today may find a row inserted later under another spelling, whose insert deletes only
   that row's own key, so the cached 404 would outlive it.
"""

from __future__ import annotations

import datetime
import functools
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from cachetail.codec_columns import CodecError, Column, UnsupportedColumn, _no_surrogates, encodable, unsupported
from cachetail.patterns import anchored, matches

SHOWN = 40  # at most this many characters of bad input go into a message
MAX_KEY_COLUMNS = 3
UUID_PATTERN = anchored("(?:[0-9a-fA-F]{32}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                        "[0-9a-fA-F]{12})")
# a day of the calendar, years 0001-9999 (Python's date; the month and day checked by parsing)
DATE_PATTERN = anchored("(?:000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})-(?:0[1-9]|1[0-2])"
                        "-(?:0[1-9]|[12][0-9]|3[01])")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")


class BadKey(ValueError):
    """A path parameter that is not a valid key value: the API answers 400 with ``str(exc)``."""

    def __init__(self, param: str, reason: str, raw: str | None = None) -> None:
        self.param, self.reason = param, reason
        shown = "" if raw is None else f" (got {_shown(raw)})"
        super().__init__(f"{param}: {reason}{shown}")


def _shown(raw: str) -> str:
    return repr(raw[:SHOWN]) + ("..." if len(raw) > SHOWN else "")


def quote_identifier(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


KEY_TYPES = ("char", "varchar", "binary", "varbinary", "enum")
FILTER_ONLY_TYPES = ("date",)
# Types a list filter could name but should not: the reason goes into the refusal.
_NO_FILTER = {
    "set": "equality on a SET compares the whole combination of members, so a row holding"
           " 'a,b' is in no variant 'a'; filter on a generated column or a child table instead",
    "datetime": "an equality filter matches one instant to the microsecond, never what a list"
                " filter means; filter on a DATE column (a generated column DATE(...) works)",
    "timestamp": "an equality filter matches one instant to the microsecond, never what a list"
                 " filter means; filter on a DATE column (a generated column DATE(...) works)",
    "time": "an equality filter matches one time of day to the microsecond; filter on a"
            " coarser generated column instead",
}


def unsupported_key(column: Column) -> str | None:
    """Why ``column`` cannot be part of an entity key, in one line; None when it can."""
    what = f"key column {column.name!r} ({column.column_type})"
    if column.nullable:
        return f"{what}: a key column must be NOT NULL"
    if not (column.integer_bits or column.data_type in KEY_TYPES):
        return f"{what}: only integers, CHAR, VARCHAR, BINARY, VARBINARY and ENUM can be keys"
    return unsupported(column)


def unsupported_filter(column: Column) -> str | None:
    """Why ``column`` cannot filter a list, in one line; None when it can (it may be NULL:
    such rows are in no variant filtering on it)."""
    what = f"filter column {column.name!r} ({column.column_type})"
    reason = _NO_FILTER.get(column.data_type)
    if reason is not None:
        return f"{what}: cannot filter a list: {reason}"
    if not (column.integer_bits or column.data_type in KEY_TYPES + FILTER_ONLY_TYPES):
        return f"{what}: only integers, CHAR, VARCHAR, BINARY, VARBINARY, ENUM and DATE can filter a list"
    return unsupported(column)


def negatives_safe(column: Column) -> bool:
    """Whether no spelling but the row's own can ever find a row by this column."""
    if column.integer_bits or column.is_binary:
        return True
    collation = (column.collation or "").lower()
    no_pad = "_nopad_" in collation or "_0900_" in collation
    return collation == "binary" or (collation.endswith("_bin") and no_pad)


# --------------------------------------------------------------- parsers

Parser = Callable[[str, str], Any]


def _integer_parser(column: Column) -> Parser:
    low, high = column.integer_range
    pattern = re.compile(r"-?[0-9]{1,20}" if low < 0 else r"[0-9]{1,20}")
    form = "1 to 20 ASCII digits, optionally after '-'" if low < 0 else "1 to 20 ASCII digits"

    def parse(param: str, raw: str) -> int:
        if not pattern.fullmatch(raw):
            raise BadKey(param, f"must be an integer ({form})", raw)
        value = int(raw)
        if not low <= value <= high:
            raise BadKey(param, f"must be between {low} and {high}", raw)
        return value

    return parse


def char_class(column: Column) -> str:
    """The characters a text key or filter value may hold: printable (no Cc control
    character) and in the column's character set, as a regex class."""
    return _charset_class((column.charset or "").lower())


@functools.cache
def _charset_class(charset: str) -> str:
    controls = "\\u0000-\\u001f\\u007f-\\u009f"
    if charset in ("latin1", "ascii"):
        allowed = [c for c in range(0x20, 0x10000)
                   if unicodedata.category(chr(c)) not in ("Cc", "Cs") and encodable(chr(c), charset)]
        return "[" + "".join(_ranges(allowed)) + "]"
    if charset in ("utf8mb3", "utf8"):  # the Basic Multilingual Plane (astral characters as such)
        return f"[^{controls}\U00010000-\U0010ffff]"
    return f"[^{controls}]"


def _ranges(codes: list[int]) -> list[str]:
    out: list[str] = []
    start = prev = codes[0]
    for c in codes[1:] + [-1]:
        if c == prev + 1:
            prev = c
            continue
        out.append(_class_char(start) if start == prev else f"{_class_char(start)}-{_class_char(prev)}")
        start = prev = c
    return out


def _class_char(code: int) -> str:
    return f"\\u{code:04x}"


def text_pattern(column: Column) -> str:
    return anchored(char_class(column) + "*")


def _text_parser(column: Column) -> Parser:
    limit = column.char_length or 0
    pattern = text_pattern(column)

    def parse(param: str, raw: str) -> str:
        if not raw:
            raise BadKey(param, "must not be empty")
        if len(raw) > limit:
            raise BadKey(param, f"must be at most {limit} characters", raw)
        # (a lone surrogate cannot come through HTTP; a str built otherwise may hold one)
        if not matches(pattern, raw) or not _no_surrogates(raw):
            if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in raw):
                raise BadKey(param, "must not contain control characters", raw)
            raise BadKey(param, f"has characters that {column.charset} cannot hold", raw)
        return raw

    return parse


def _uuid_parser(param: str, raw: str) -> bytes:
    if not matches(UUID_PATTERN, raw):
        raise BadKey(param, "must be a UUID: 32 hex digits or 8-4-4-4-12", raw)
    return bytes.fromhex(raw.replace("-", ""))


def _hex_parser(column: Column) -> Parser:
    size = column.char_length or 0
    fixed = column.data_type == "binary"
    wanted = f"{2 * size} hex digits" if fixed else f"hex, 1 to {size} bytes"

    def parse(param: str, raw: str) -> bytes:
        if not _HEX.fullmatch(raw) or (len(raw) != 2 * size if fixed else len(raw) > 2 * size):
            raise BadKey(param, f"must be {wanted}", raw)
        return bytes.fromhex(raw)

    return parse


_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _date_parser(param: str, raw: str) -> datetime.date:
    if not _DATE.fullmatch(raw):
        raise BadKey(param, "must be a date: YYYY-MM-DD", raw)
    try:
        if not matches(DATE_PATTERN, raw):
            raise ValueError(raw)
        return datetime.date.fromisoformat(raw)
    except ValueError:
        raise BadKey(param, "is no day of the calendar (YYYY-MM-DD, from 0001-01-01)", raw) from None


def param_schema(column: Column) -> dict[str, Any]:
    """The JSON Schema of a key or filter parameter: exactly what its parser accepts (an
    ENUM: its members; the API also takes spellings equal under the column's collation)."""
    if column.integer_bits:
        low, high = column.integer_range
        return {"type": "integer", "minimum": low, "maximum": high}
    if column.data_type == "enum":
        return {"type": "string", "enum": list(column.members)}
    if column.data_type == "date":
        return {"type": "string", "format": "date", "pattern": DATE_PATTERN}
    if column.data_type == "binary" and column.char_length == 16:
        return {"type": "string", "format": "uuid", "pattern": UUID_PATTERN}
    if column.is_binary:
        size = column.char_length or 0
        pairs = f"{{{size}}}" if column.data_type == "binary" else f"{{1,{size}}}"
        return {"type": "string", "pattern": anchored(f"(?:[0-9a-fA-F]{{2}}){pairs}")}
    return {"type": "string", "minLength": 1, "maxLength": column.char_length or 0,
            "pattern": text_pattern(column)}


def _parser(column: Column) -> Parser:
    if column.integer_bits:
        return _integer_parser(column)
    if column.data_type == "date":
        return _date_parser
    if column.data_type == "binary" and column.char_length == 16:
        return _uuid_parser
    if column.is_binary:
        return _hex_parser(column)
    return _text_parser(column)


# ------------------------------------------------------------- key texts

Texter = Callable[[Any], str]


def _integer_text(value: Any) -> str:
    if type(value) is not int:
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return str(value)


def _string_text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return quote(value, safe="")


def _binary_text(length: int | None) -> Texter:
    def text(value: Any) -> str:
        if value == "":  # the library's empty binary value
            value = b""
        if not isinstance(value, bytes):
            raise TypeError(f"expected bytes, got {type(value).__name__}")
        return (value.ljust(length, b"\x00") if length else value).hex()

    return text


def _date_text(value: Any) -> str:
    if type(value) is not datetime.date:
        raise TypeError(f"expected a date, got {type(value).__name__}")
    return value.isoformat()


def _texter(column: Column) -> Texter:
    if column.integer_bits:
        return _integer_text
    if column.data_type == "date":
        return _date_text
    if column.is_binary:
        return _binary_text(column.char_length if column.data_type == "binary" else None)
    return _string_text


class KeyCodec:
    """The key columns of an entity, in key order; ``params`` names the path parameters
    (default: the column names).  ``filter``: one list filter's column (a DATE allowed)."""

    def __init__(self, key_columns: Sequence[Column], params: Sequence[str] | None = None,
                 filter: bool = False) -> None:
        if not 1 <= len(key_columns) <= MAX_KEY_COLUMNS:
            raise CodecError(f"a key has 1 to {MAX_KEY_COLUMNS} columns, not {len(key_columns)}")
        for column in key_columns:
            problem = unsupported_filter(column) if filter else unsupported_key(column)
            if problem is not None:
                raise UnsupportedColumn(problem)
        self.columns = tuple(key_columns)
        self.names = tuple(c.name for c in key_columns)
        self.params = tuple(params) if params is not None else self.names
        if len(self.params) != len(self.columns):
            raise CodecError(f"{len(self.params)} path parameters for {len(self.columns)} key columns")
        self.parsers = self._parsers = tuple(_parser(c) for c in key_columns)
        self._texters = tuple(_texter(c) for c in key_columns)
        self._negatives = all(negatives_safe(c) for c in key_columns)

    @property
    def negatives_cacheable(self) -> bool:
        """Whether a 404 for this key may be cached (see the collation rule above)."""
        return self._negatives

    def parse(self, path_params: Sequence[str]) -> tuple[Any, ...]:
        """The WHERE values for the path parameters; :class:`BadKey` for a bad one."""
        if len(path_params) != len(self.columns):
            raise BadKey("/".join(self.params), f"expected {len(self.columns)} path parameters")
        return tuple(p(name, raw) for p, name, raw in zip(self._parsers, self.params, path_params, strict=True))

    def where(self) -> str:
        return " AND ".join(f"{quote_identifier(n)} = %s" for n in self.names)

    def text_from_params(self, values: Sequence[Any]) -> str:
        """The key text of :meth:`parse`'s values."""
        return self._text(values)

    def text_from_row(self, row: Mapping[str, Any]) -> str:
        """The key text of a PyMySQL row holding the key columns."""
        return self._text([self._value(row, n) for n in self.names])

    def text_from_binlog(self, values: Mapping[str, Any]) -> str:
        """The key text of a python-mysql-replication row image."""
        return self._text([self._value(values, n) for n in self.names])

    def canonical(self, requested: Sequence[Any], row: Mapping[str, Any]) -> bool:
        """Whether the row found for the parsed ``requested`` values spells them exactly,
        so that its copy may be stored under their key."""
        return self.text_from_params(requested) == self.text_from_row(row)

    def _text(self, values: Sequence[Any]) -> str:
        if len(values) != len(self._texters):
            raise CodecError(f"expected {len(self._texters)} key values, got {len(values)}")
        try:
            return ":".join(t(v) for t, v in zip(self._texters, values, strict=True))
        except TypeError as exc:
            raise CodecError(f"key {self.names!r}: {exc}") from exc

    @staticmethod
    def _value(row: Mapping[str, Any], name: str) -> Any:
        try:
            value = row[name]
        except KeyError:
            raise CodecError(f"key column {name!r} is missing from the row") from None
        if value is None:
            raise CodecError(f"key column {name!r} is NULL")
        return value
