"""The column codec: the served JSON bytes of a row, the same from a cold SELECT and from a
binlog row image, and the canonical key text of an entity.

Public API (the rest of cachetail imports these from here)::

    Column, load_columns(conn, table, schema=None), unsupported(column)
    RowCodec(columns): select_list(), from_select(row), from_binlog(values, none_sources=None),
                       list_from_select(rows), list_from_binlog(images, none_sources=None)
    KeyCodec(key_columns, params=None): parse(path_params), where(), text_from_row(row),
                       text_from_binlog(values), text_from_params(values), canonical(values, row),
                       negatives_cacheable
    prepare_binlog_event(event), quote_identifier(name), CodecError, UnsupportedColumn, BadKey

JSON: an object with the served columns in their served order, compact separators,
``ensure_ascii=False``, UTF-8.  Per type (NULL is ``null`` for every type):

==================== ============================= ==========================================
type                 JSON                          notes
==================== ============================= ==========================================
TINYINT..BIGINT      number                        signed and unsigned, full range
DECIMAL(p,s)         string, exactly s decimals    ``"-12.50"``
FLOAT                number, shortest float32 text SELECT casts to DOUBLE: ``0.1`` not ``0.100000001``
DOUBLE               number, shortest (``repr``)   the text protocol is exact for doubles
DATE                 ``"2024-02-29"``              zero / zero-in-date values: null
TIME(fsp)            ``"-838:59:59.000"``          fsp digits exactly, hours >= 2 digits
DATETIME(fsp)        ``"2024-01-01T00:00:00.5"``   no zone; zero dates: null
TIMESTAMP(fsp)       ``"2024-01-01T00:42:00Z"``    UTC (the session must be on '+00:00')
CHAR/VARCHAR/TEXT    string                        utf8mb4, utf8mb3, latin1, ascii
JSON (MariaDB)       the value, compact            numbers kept as stored, members in order
BINARY(16)           ``"00112233-4455-..."``       lowercase dashed UUID
other binary, BLOB   string, base64                BINARY(n) with its 0x00 padding
ENUM                 string                        the member ('' for MySQL's error value)
SET                  array of strings              definition order; empty set ``[]``
BIT(n)               number                        big-endian unsigned
YEAR                 number                        0 for YEAR 0000
==================== ============================= ==========================================

A binlog image is what python-mysql-replication 1.0.17 decodes with binlog_row_image=FULL
and binlog_row_metadata=FULL; call :func:`prepare_binlog_event` on each rows event before
reading ``event.rows`` (latin1), and pass the image's ``none_sources`` when a nullable SET
column is served (the library returns None for both NULL and the empty set).

The collation rule (see cachetail/codec_keys.py): store a row only under the key text the
row itself spells (``KeyCodec.canonical``); cache a 404 only when ``negatives_cacheable``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cachetail.codec_columns import (
    CodecError,
    Column,
    UnsupportedColumn,
    load_columns,
    prepare_binlog_columns,
    unsupported,
)
from cachetail.codec_keys import BadKey, KeyCodec, quote_identifier
from cachetail.codec_values import NULL, Converter, converters, json_str, select_expression

__all__ = ["BadKey", "CodecError", "Column", "KeyCodec", "RowCodec", "UnsupportedColumn", "quote_identifier",
           "load_columns", "prepare_binlog_event", "unsupported"]

EMPTY_SET = "empty set"  # pymysqlreplication.constants.NONE_SOURCE.EMPTY_SET


def prepare_binlog_event(event: Any) -> None:
    """Ready a rows event for exact decoding (MySQL's latin1); call before ``event.rows``."""
    prepare_binlog_columns(event.columns)


class RowCodec:
    """The served columns of one table -> the JSON bytes served for a row."""

    def __init__(self, columns: Sequence[Column]) -> None:
        if not columns:
            raise CodecError("a row codec needs at least one column")
        names = [c.name for c in columns]
        if len(set(names)) != len(names):
            raise CodecError(f"duplicate columns in {names!r}")
        for column in columns:
            problem = unsupported(column)
            if problem is not None:
                raise UnsupportedColumn(problem)
        self.columns = tuple(columns)
        self.names = tuple(names)
        pairs = [converters(c) for c in columns]
        prefixes = [json_str(n) + ":" for n in names]
        self._cold: tuple[tuple[str, str, Converter], ...] = tuple(
            (n, p, cold) for n, p, (cold, _) in zip(names, prefixes, pairs, strict=True))
        self._binlog: tuple[tuple[str, str, Converter], ...] = tuple(
            (n, p, binlog) for n, p, (_, binlog) in zip(names, prefixes, pairs, strict=True))
        self._empty_sets = {c.name: not c.nullable for c in columns if c.data_type == "set"}

    def select_list(self) -> str:
        """The SELECT expressions for a cold fill, each aliased to its column's name."""
        return ", ".join(select_expression(c, quote_identifier(c.name)) for c in self.columns)

    def from_select(self, row: Mapping[str, Any]) -> bytes:
        """A PyMySQL row of ``SELECT <select_list()>`` (utf8mb4, time_zone '+00:00')."""
        return self._object(row, self._cold, None).encode("utf-8")

    def from_binlog(self, values: Mapping[str, Any], none_sources: Mapping[str, str] | None = None
                    ) -> bytes:
        """A row image (``row["values"]`` / ``row["after_values"]``); ``none_sources`` is the
        image's ``none_sources`` / ``after_none_sources``, needed for nullable SET columns."""
        return self._object(values, self._binlog, none_sources).encode("utf-8")

    def list_from_select(self, rows: Iterable[Mapping[str, Any]]) -> bytes:
        return ("[" + ",".join(self._object(r, self._cold, None) for r in rows) + "]").encode("utf-8")

    def list_from_binlog(self, images: Iterable[Mapping[str, Any]],
                         none_sources: Iterable[Mapping[str, str] | None] | None = None) -> bytes:
        images = list(images)
        sources = [None] * len(images) if none_sources is None else list(none_sources)
        if len(sources) != len(images):
            raise CodecError(f"{len(images)} images but {len(sources)} none_sources")
        parts = [self._object(v, self._binlog, s) for v, s in zip(images, sources, strict=True)]
        return ("[" + ",".join(parts) + "]").encode("utf-8")

    def _object(self, row: Mapping[str, Any], plan: tuple[tuple[str, str, Converter], ...],
                none_sources: Mapping[str, str] | None) -> str:
        parts = []
        for name, prefix, convert in plan:
            try:
                value = row[name]
            except KeyError:
                raise CodecError(f"column {name!r} is missing from the row") from None
            if value is None:
                parts.append(prefix + (self._binlog_none(name, none_sources) if plan is self._binlog else NULL))
                continue
            try:
                parts.append(prefix + convert(value))
            except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
                raise CodecError(f"column {name!r}: {exc}") from exc
        return "{" + ",".join(parts) + "}"

    def _binlog_none(self, name: str, none_sources: Mapping[str, str] | None) -> str:
        """None in an image is NULL, except for a SET, where it may be the empty set."""
        not_null_set = self._empty_sets.get(name)
        if not_null_set is None:
            return NULL
        if not_null_set:
            return "[]"
        if none_sources is None:
            raise CodecError(f"column {name!r}: NULL or the empty set? pass the image's none_sources")
        return "[]" if none_sources.get(name) == EMPTY_SET else NULL
