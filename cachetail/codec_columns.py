"""Column metadata for the codec: what information_schema says about a served column.

A :class:`Column` is built from one ``information_schema.COLUMNS`` row; ``load_columns``
reads a table's columns over a PyMySQL connection.  ``unsupported`` names, in one line,
why a column cannot be served byte-identically from a SELECT and from a binlog row image
(python-mysql-replication 1.0.17), or returns None.

MySQL's ``latin1`` is Windows-1252 with the five holes 0x81, 0x8D, 0x8F, 0x90 and 0x9D
mapped to the C1 controls U+0081... .  The binlog library decodes latin1 with Python's
``cp1252``, which has those holes and raises ``UnicodeDecodeError`` for the whole event:
``MYSQL_LATIN1`` is a codec with MySQL's table, which :func:`prepare_binlog_event` points
latin1 columns of a table map at.
"""

from __future__ import annotations

import codecs
import encodings.cp1252
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pymysql.cursors

INTEGER_BITS = {"tinyint": 8, "smallint": 16, "mediumint": 24, "int": 32, "bigint": 64}
TEXT_TYPES = frozenset({"char", "varchar", "tinytext", "text", "mediumtext", "longtext"})
BINARY_TYPES = frozenset({"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"})
TEMPORAL_TYPES = frozenset({"date", "time", "datetime", "timestamp", "year"})
OTHER_TYPES = frozenset({"decimal", "float", "double", "enum", "set", "bit"})
# Character sets whose bytes both paths decode to the same text (latin1 with MYSQL_LATIN1).
CHARSETS = frozenset({"utf8mb4", "utf8mb3", "utf8", "latin1", "ascii"})
UTF8_CHARSETS = frozenset({"utf8mb4", "utf8mb3", "utf8"})

MYSQL_LATIN1 = "cachetail_mysql_latin1"
_LIBRARY_LATIN1 = "cp1252"  # what python-mysql-replication names latin1 columns' encoding


class CodecError(Exception):
    """A value or a column the codec cannot turn into the served bytes."""


class UnsupportedColumn(CodecError):
    """A column whose type the codec does not serve (see :func:`unsupported`)."""


@dataclass(frozen=True)
class Column:
    """One column as information_schema describes it."""

    name: str
    data_type: str  # lower case: "int", "varchar", "longtext", ...
    column_type: str  # "int(10) unsigned", "enum('a','b')", ...
    nullable: bool
    charset: str | None
    collation: str | None
    char_length: int | None  # characters for text, bytes for binary
    precision: int | None  # DECIMAL digits, BIT bits
    scale: int | None
    fsp: int | None  # fractional seconds digits of TIME / DATETIME / TIMESTAMP
    position: int
    unsigned: bool = False
    members: tuple[str, ...] = ()  # ENUM / SET, in definition order
    is_json: bool = False  # MariaDB JSON: LONGTEXT with a json_valid() check
    auto_increment: bool = False  # its values start at 1 (0 asks for the next one)

    @classmethod
    def from_information_schema(cls, row: Mapping[str, Any], is_json: bool = False) -> Column:
        data_type = str(row["DATA_TYPE"]).lower()
        column_type = str(row["COLUMN_TYPE"])
        return cls(
            name=str(row["COLUMN_NAME"]),
            data_type=data_type,
            column_type=column_type,
            nullable=str(row["IS_NULLABLE"]).upper() == "YES",
            charset=_text_or_none(row.get("CHARACTER_SET_NAME")),
            collation=_text_or_none(row.get("COLLATION_NAME")),
            char_length=_int_or_none(row.get("CHARACTER_MAXIMUM_LENGTH")),
            precision=_int_or_none(row.get("NUMERIC_PRECISION")),
            scale=_int_or_none(row.get("NUMERIC_SCALE")),
            fsp=_int_or_none(row.get("DATETIME_PRECISION")),
            position=int(row["ORDINAL_POSITION"]),
            unsigned=bool(re.search(r"\bunsigned\b", column_type, re.IGNORECASE)),
            members=parse_members(column_type) if data_type in ("enum", "set") else (),
            is_json=is_json,
            auto_increment="auto_increment" in str(row.get("EXTRA") or "").lower(),
        )

    @property
    def integer_bits(self) -> int | None:
        return INTEGER_BITS.get(self.data_type)

    @property
    def is_text(self) -> bool:
        return self.data_type in TEXT_TYPES

    @property
    def is_binary(self) -> bool:
        return self.data_type in BINARY_TYPES

    @property
    def integer_range(self) -> tuple[int, int]:
        bits = self.integer_bits
        if bits is None:
            raise CodecError(f"column {self.name!r} is not an integer")
        if self.unsigned:
            return (1 if self.auto_increment else 0), (1 << bits) - 1
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def _text_or_none(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


_ESCAPES = {"0": "\x00", "n": "\n", "r": "\r", "Z": "\x1a", "t": "\t", "b": "\b"}


def parse_members(column_type: str) -> tuple[str, ...]:
    """The members of ``enum('a','it''s')`` / ``set(...)`` as the server spells them."""
    start = column_type.index("(")
    members: list[str] = []
    i, end = start + 1, column_type.rindex(")")
    while i < end:
        if column_type[i] != "'":
            raise CodecError(f"cannot parse the members of {column_type[:60]!r}")
        text, i = _quoted(column_type, i + 1)
        members.append(text)
        if i < end and column_type[i] == ",":
            i += 1
    return tuple(members)


def _quoted(text: str, i: int) -> tuple[str, int]:
    """The SQL string literal starting after its opening quote at ``i``; the index after it."""
    out: list[str] = []
    while True:
        ch = text[i]
        if ch == "'":
            if text[i + 1:i + 2] == "'":
                out.append("'")
                i += 2
                continue
            return "".join(out), i + 1
        if ch == "\\":
            out.append(_ESCAPES.get(text[i + 1], text[i + 1]))
            i += 2
            continue
        out.append(ch)
        i += 1


# ----------------------------------------------------------------- loading

_COLUMNS_SQL = (
    "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, CHARACTER_SET_NAME, COLLATION_NAME,"
    " CHARACTER_MAXIMUM_LENGTH, NUMERIC_PRECISION, NUMERIC_SCALE, DATETIME_PRECISION, ORDINAL_POSITION,"
    " EXTRA"
    " FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s"
    " ORDER BY ORDINAL_POSITION"
)
# MariaDB spells a JSON column as LONGTEXT with this check (MySQL's JSON is DATA_TYPE json).
_JSON_CHECKS_SQL = (
    "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS"
    " WHERE CONSTRAINT_SCHEMA = %s AND TABLE_NAME = %s"
)
_JSON_VALID = re.compile(r"\s*json_valid\s*\(\s*`((?:[^`]|``)+)`\s*\)\s*", re.IGNORECASE)


def load_columns(conn: pymysql.connections.Connection, table: str, schema: str | None = None
                 ) -> list[Column]:
    """The columns of ``schema.table`` (default: the connection's database), in table order;
    an empty list if there is no such table (or no privilege to see it)."""
    with conn.cursor(pymysql.cursors.DictCursor) as cur:
        if schema is None:
            cur.execute("SELECT DATABASE() AS db")
            found = cur.fetchone()
            schema = None if found is None else _text_or_none(found["db"])
            if schema is None:
                raise CodecError("load_columns: no schema given and the connection has no database")
        cur.execute(_COLUMNS_SQL, (schema, table))
        rows = list(cur.fetchall())
        json_columns = _json_checked(cur, schema, table) if _is_mariadb(conn) and rows else set()
    return [Column.from_information_schema(r, str(r["COLUMN_NAME"]) in json_columns) for r in rows]


def _is_mariadb(conn: pymysql.connections.Connection) -> bool:
    info: Any = conn.get_server_info  # untyped in types-PyMySQL
    return "mariadb" in str(info()).lower()


def _json_checked(cur: Any, schema: str, table: str) -> set[str]:
    cur.execute(_JSON_CHECKS_SQL, (schema, table))
    names: set[str] = set()
    for row in cur.fetchall():
        match = _JSON_VALID.fullmatch(_text_or_none(row["CHECK_CLAUSE"]) or "")
        if match:
            names.add(match.group(1).replace("``", "`"))
    return names


# ------------------------------------------------------------- supported?

def unsupported(column: Column) -> str | None:
    """Why ``column`` cannot be served, in one line; None when it can."""
    what = f"column {column.name!r} ({column.column_type})"
    t = column.data_type
    if t == "json":
        return f"{what}: MySQL's binary JSON is not supported (MariaDB's JSON, a checked LONGTEXT, is)"
    if t not in INTEGER_BITS and t not in TEXT_TYPES | BINARY_TYPES | TEMPORAL_TYPES | OTHER_TYPES:
        return f"{what}: type {t} is not supported"
    if t in TEXT_TYPES or t in ("enum", "set"):
        charset = (column.charset or "").lower()
        if charset not in CHARSETS:
            return f"{what}: character set {charset or '?'} is not supported (utf8mb4, utf8mb3, latin1, ascii are)"
        if t in ("enum", "set") and charset not in UTF8_CHARSETS and not all(m.isascii() for m in column.members):
            return (f"{what}: non-ASCII {t.upper()} members in {charset}: the binlog library"
                    " decodes member names as UTF-8")
    if t == "set" and any("," in m for m in column.members):
        return f"{what}: a SET member contains ','"
    return None


# ------------------------------------------------ binlog decoding of latin1

def _mysql_latin1_table() -> str:
    holes_filled = (ch if ch != "\ufffe" else chr(i) for i, ch in enumerate(encodings.cp1252.decoding_table))
    return "".join(holes_filled)


_DECODING_TABLE = _mysql_latin1_table()
_ENCODING_TABLE = codecs.charmap_build(_DECODING_TABLE)


def _latin1_encode(text: str, errors: str = "strict") -> tuple[bytes, int]:
    return codecs.charmap_encode(text, errors, _ENCODING_TABLE)


def _latin1_decode(data: Any, errors: str = "strict") -> tuple[str, int]:
    return codecs.charmap_decode(data, errors, _DECODING_TABLE)


def _search(name: str) -> codecs.CodecInfo | None:
    if name.replace("-", "_") != MYSQL_LATIN1:
        return None
    return codecs.CodecInfo(_latin1_encode, _latin1_decode, name=MYSQL_LATIN1)


_registered = False


def register_mysql_latin1() -> None:
    """Make ``MYSQL_LATIN1`` known to ``bytes.decode`` (idempotent)."""
    global _registered
    if not _registered:
        codecs.register(_search)
        _registered = True


def encodable(text: str, charset: str | None) -> bool:
    """Whether every character of ``text`` exists in the column character set."""
    charset = (charset or "").lower()
    try:
        if charset == "latin1":
            _latin1_encode(text)
        elif charset == "ascii":
            text.encode("ascii")
        elif charset in ("utf8mb3", "utf8"):
            return all(ord(ch) <= 0xFFFF for ch in text) and _no_surrogates(text)
        else:
            return _no_surrogates(text)
    except UnicodeEncodeError:
        return False
    return True


def _no_surrogates(text: str) -> bool:
    return not any(0xD800 <= ord(ch) <= 0xDFFF for ch in text)


def prepare_binlog_columns(columns: Iterable[Any]) -> None:
    """Point the latin1 columns of a python-mysql-replication table map at MySQL's latin1.

    Call it with ``event.columns`` of a rows event before reading ``event.rows``: without
    it, a latin1 value holding 0x81, 0x8D, 0x8F, 0x90 or 0x9D raises UnicodeDecodeError
    for the whole event.  It changes only the column descriptions of that table map."""
    register_mysql_latin1()
    for column in columns:
        if getattr(column, "character_set_name", None) == _LIBRARY_LATIN1:
            column.character_set_name = MYSQL_LATIN1
