"""List filter values as the column's collation sees them.

``/products?category=books`` finds the rows of ``Books`` under a case-insensitive
collation, and ``Books `` finds them under PAD SPACE.  A list variant cached under the
requested spelling would be invisible to the invalidator, which only ever sees the
rows' own spellings, and a row inserted later as ``BOOKS`` would join it unannounced.
So a string filter on such a column names its variant by the collation's weight of
the value (``WEIGHT_STRING``; trailing spaces trimmed first under PAD SPACE, where
``WEIGHT_STRING`` keeps them but ``=`` ignores them): every spelling the server treats
as equal gets the same variant, whether the API builds it from a request or the
invalidator from a row image.  The server computes the weight (no Python emulation
of collations); both processes keep recent weights in a bounded LRU.

Exact columns (integers, binary strings, ``_bin`` NO PAD collations) need none of this:
their canonical text is the value itself.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Iterable

IDENT = re.compile(r"[A-Za-z0-9_]+")
MAX_CACHED = 10_000


def is_exact(charset: str | None, collation: str | None) -> bool:
    """True when ``=`` on the column compares the bytes: nothing but the row's own spelling matches."""
    if charset is None or collation is None or collation == "binary":
        return True
    return collation.endswith(("_nopad_bin", "_0900_bin"))


def pads_spaces(collation: str) -> bool:
    """PAD SPACE: trailing spaces do not count in comparisons (every collation whose name does
    not say NO PAD on MariaDB; MySQL 8's _0900_ collations are NO PAD)."""
    return "nopad" not in collation and "_0900_" not in collation


class Weigher:
    """The weight texts of one column's collation, from the server, remembered."""

    def __init__(self, charset: str, collation: str) -> None:
        if not (IDENT.fullmatch(charset) and IDENT.fullmatch(collation)):
            raise ValueError(f"not a charset/collation name: {charset!r} {collation!r}")
        value = f"CAST(%s AS CHAR CHARACTER SET {charset}) COLLATE {collation}"
        if pads_spaces(collation):
            value = f"TRIM(TRAILING ' ' FROM {value})"
        self.sql_one = f"HEX(WEIGHT_STRING({value}))"
        self._known: OrderedDict[str, str] = OrderedDict()

    def sql(self, count: int) -> str:
        """One SELECT returning the weights of ``count`` values, in order."""
        return "SELECT " + ", ".join(f"{self.sql_one} AS w{i}" for i in range(count))

    def known(self, value: str) -> str | None:
        found = self._known.get(value)
        if found is not None:
            self._known.move_to_end(value)
        return found

    def learn(self, value: str, weight_hex: str) -> str:
        text = "~" + weight_hex.lower()  # never a plain value's text: those are percent-encoded
        self._known[value] = text
        if len(self._known) > MAX_CACHED:
            self._known.popitem(last=False)
        return text

    def weigh(self, values: Iterable[str], query: Callable[[str, tuple[str, ...]], tuple[str, ...]]
              ) -> dict[str, str]:
        """The weight text of each value; the unknown ones asked in one query (``query(sql, args)``
        returns the row)."""
        out: dict[str, str] = {}
        missing: list[str] = []
        for value in values:
            found = self.known(value)
            if found is None:
                missing.append(value)
            else:
                out[value] = found
        if missing:
            unique = list(dict.fromkeys(missing))
            for value, weight in zip(unique, query(self.sql(len(unique)), tuple(unique)), strict=True):
                out[value] = self.learn(value, str(weight))
        return out
