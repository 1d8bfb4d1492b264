"""What the read endpoints share: query-string checks, input messages, the X-Cache headers."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from starlette.requests import Request

from api.answer import Answer
from api.errors import ApiError
from cachetail.codec import BadKey, Column, KeyCodec

JSON = "application/json"


def check_query(request: Request, allowed: frozenset[str] = frozenset()) -> None:
    if not request.scope["query_string"]:  # the common case: nothing to parse
        return
    for name in request.query_params:
        if name not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise ApiError(400, "unknown_parameter",
                           f"unknown query parameter {name[:40]!r} (accepted: {known})")


def parse(codec: KeyCodec, raw: Sequence[str], subject: str) -> tuple[Any, ...]:
    """Typed values for a key or filter; a 400 naming the parameter and what it takes."""
    try:
        return codec.parse(raw)
    except BadKey as exc:
        named = (c for c, p in zip(codec.columns, codec.params, strict=False) if p == exc.param)
        column = next(named, codec.columns[0])
        raise ApiError(400, f"invalid_{exc.param}", f"{subject}{exc.param} {takes(column)}") from None


def takes(column: Column) -> str:
    """What a valid value of a key or filter column looks like, in words."""
    if column.data_type == "enum":
        shown = ", ".join(column.members[:20]) + (", ..." if len(column.members) > 20 else "")
        return f"is one of {shown} (as the column's collation compares)"
    if column.data_type == "date":
        return "is a date: YYYY-MM-DD"
    if column.integer_bits:
        low, high = column.integer_range
        return f"is an integer from {low} to {high}"
    if column.data_type == "binary" and column.char_length == 16:
        return "is a UUID: 32 hex digits, or 8-4-4-4-12"
    if column.is_binary:
        size = column.char_length or 0
        return f"is {size} bytes in hex" if column.data_type == "binary" else f"is 1 to {size} bytes in hex"
    return f"is 1 to {column.char_length} printable characters"


def headers(answer: Answer) -> dict[str, str]:
    if answer.tier is None:
        return {"X-Cache": answer.source}
    return {"X-Cache": answer.source, "X-Cache-Tier": answer.tier}


@functools.cache
def raw_headers(source: str, tier: str | None) -> tuple[tuple[bytes, bytes], ...]:
    """The X-Cache headers and the content type, encoded once per kind of answer."""
    pairs = [*headers(Answer(None, source, tier)).items(), ("Content-Type", JSON)]
    return tuple((name.lower().encode(), value.encode()) for name, value in pairs)
