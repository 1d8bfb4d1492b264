"""Regular expressions that are both a parameter's validator and its documented pattern.

The API checks a parameter with the same expression its OpenAPI document declares, so the
two cannot disagree (a fuzzer checks that they do not).  Every expression here is written
in the common subset of Python's ``re`` and ECMA-262 (what JSON Schema means): character
classes, alternation, bounded repetition, no lookaround, no Python-only escapes.
"""

from __future__ import annotations

import re
from functools import cache


def _digits_upto(limit: str) -> list[str]:
    """Alternatives matching the decimal numbers with ``len(limit)`` digits, no leading zero,
    that are at most ``limit``."""
    out = []
    n = len(limit)
    for i, ch in enumerate(limit):
        first = "1" if i == 0 else "0"
        d = int(ch)
        low = int(first)
        if d > low:  # this digit smaller than the limit's, anything after it
            cls = f"[{low}-{d - 1}]" if d - 1 > low else str(low)
            out.append(limit[:i] + cls + ("[0-9]" * (n - i - 1) if n - i - 1 <= 1 else f"[0-9]{{{n - i - 1}}}"))
    out.append(limit)
    return out


@cache
def uint_up_to(limit: int) -> str:
    """A group matching 0..``limit`` in decimal, without leading zeros."""
    if limit < 0:
        raise ValueError("limit must be >= 0")
    text = str(limit)
    alternatives = ["0"]
    if len(text) > 1:
        alternatives.append("[1-9]")
        for width in range(2, len(text)):
            alternatives.append(f"[1-9][0-9]{{{width - 1}}}")
        alternatives += _digits_upto(text)
    elif limit >= 1:
        alternatives.append(f"[1-{limit}]" if limit > 1 else "1")
    return "(?:" + "|".join(alternatives) + ")"


@cache
def int_between(low: int, high: int) -> str:
    """A group matching ``low``..``high`` (``low <= 0 <= high``) in decimal, without leading
    zeros and without ``-0``."""
    if not low <= 0 <= high:
        raise ValueError("the range must include 0")
    if low == 0:
        return uint_up_to(high)
    negative = uint_up_to(-low)[3:-1].split("|")[1:]  # drop "0": no "-0"
    return "(?:" + uint_up_to(high)[3:-1] + "|-(?:" + "|".join(negative) + "))"


def anchored(body: str) -> str:
    return f"^{body}$"


@cache
def compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def matches(pattern: str, value: str) -> bool:
    """Whether ``value`` matches ``pattern`` whole, as JSON Schema means it (``$`` the end)."""
    return compiled(pattern).fullmatch(value) is not None
