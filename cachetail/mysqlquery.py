"""One statement on a connection of its own, for the API's pooled reads and the dev servers."""

from __future__ import annotations

from typing import Any, Protocol


class Closable(Protocol):
    """A DB-API connection, or a pool's proxy for one (closing it hands it back)."""

    def cursor(self) -> Any: ...

    def close(self) -> None: ...


def run_once(conn: Closable, sql: str, args: Any = None) -> list[Any]:
    """The rows of ``sql``; ``conn`` is closed after, whatever happens."""
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())
    finally:
        conn.close()
