"""A paged list's keyset cursor (its ``after``): what the API writes into Link, one part per
order column joined by ':', and the values such a cursor stands for."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote_to_bytes

from cachetail.codec_columns import Column
from cachetail.codec_keys import char_class
from cachetail.patterns import anchored, int_between, matches

# A keyset cursor part (the ``after`` of a paged list): what the API writes into Link: an
# integer in decimal, hex for binary, percent-encoded UTF-8 for text; any such part is a
# bound of a comparison, so no length or character limit beyond its form.
_PERCENT_TEXT = "(?:[A-Za-z0-9_.~-]|%[0-9A-F]{2})+"


MAX_CURSOR = 2048  # characters of a paged list's ``after``


def cursor_pattern(columns: Sequence[Column]) -> str:
    """The ``after`` of a paged list ordered by ``columns``: their parts joined by ':'."""
    return anchored(":".join(cursor_part(c) for c in columns))


def cursor_values(columns: Sequence[Column], raw: str) -> tuple[Any, ...] | None:
    """The values of a cursor that matches :func:`cursor_pattern`; None when it does not."""
    if len(raw) > MAX_CURSOR or not matches(cursor_pattern(columns), raw):
        return None
    values: list[Any] = []
    for column, part in zip(columns, raw.split(":"), strict=True):
        if column.integer_bits:
            values.append(int(part))
        elif column.is_binary:
            values.append(bytes.fromhex(part))
        else:
            values.append(unquote_to_bytes(part).decode("utf-8", "replace"))
    return tuple(values)


def cursor_part(column: Column) -> str:
    if column.integer_bits:
        return int_between(*column.integer_range)
    if column.is_binary:
        return "(?:[0-9a-f]{2})+"
    charset = (column.charset or "").lower()
    if charset in ("latin1", "ascii"):  # only what the column can hold: a wider bound would not compare
        return _percent_encoded(char_class(column))
    return _PERCENT_TEXT


@functools.cache
def _percent_encoded(klass: str) -> str:
    """Percent-encoded UTF-8 of the characters of ``klass`` (its unreserved ASCII as is)."""
    allowed = [chr(c) for c in range(0x20, 0x10000) if re.fullmatch(klass, chr(c))]
    unreserved = "".join(ch for ch in allowed if ch.isascii() and (ch.isalnum() or ch in "_.~-"))
    encoded = sorted({"".join(f"%{b:02X}" for b in ch.encode()) for ch in allowed
                      if not (ch.isascii() and (ch.isalnum() or ch in "_.~-"))})
    return "(?:[" + re.escape(unreserved) + "]|" + "|".join(encoded) + ")+"
