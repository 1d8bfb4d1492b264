"""MySQL access: a bounded DBUtils pool of PyMySQL connections, queried off the event loop."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import anyio
import anyio.to_thread
import pymysql
import pymysql.cursors
from dbutils.pooled_db import PooledDB, PooledDBError

from cachetail.collation import Weigher
from cachetail.schema import Entity, Filter, Listing
from cachetail.settings import MySQLSettings
from metrics.api import MYSQL_QUERIES, MYSQL_QUERY_SECONDS


class DatabaseUnavailable(Exception):
    """MySQL could not answer; carries only the driver's error class name, never SQL text."""

    def __init__(self, error_class: str) -> None:
        self.error_class = error_class
        super().__init__(f"MySQL unavailable ({error_class})")


class Database:
    """Runs the API's few SELECTs in worker threads, at most ``pool_size`` at a time."""

    def __init__(self, settings: MySQLSettings, pool_size: int) -> None:
        self._pool = PooledDB(
            creator=pymysql,
            mincached=0,
            maxcached=pool_size,
            maxconnections=pool_size,
            blocking=True,
            ping=1,  # check a connection when it leaves the pool, so a restarted server heals
            cursorclass=pymysql.cursors.DictCursor,
            **settings.pymysql_kwargs(),
        )
        # As many threads as connections: a query thread never waits on the pool.
        self._limiter = anyio.CapacityLimiter(pool_size)

    def close(self) -> None:
        self._pool.close()

    async def entity_row(self, entity: Entity, values: Sequence[Any]) -> dict[str, Any] | None:
        rows = await self._query(entity.name, entity.select_sql, tuple(values))
        return rows[0] if rows else None

    async def list_rows(self, listing: Listing, filters: Sequence[tuple[Filter, Any]],
                        after: Sequence[Any] | None) -> list[dict[str, Any]]:
        """One page of a list (see :meth:`cachetail.schema.Listing.page_sql`)."""
        sql, args = listing.page_sql(filters, after)
        return await self._query(listing.name, sql, args)

    async def weights(self, weigher: Weigher, values: Sequence[str]) -> dict[str, str]:
        """Collation weights of list filter values (remembered ones without a query)."""
        known = {v: w for v in values if (w := weigher.known(v)) is not None}
        if len(known) == len(values):
            return known
        return await anyio.to_thread.run_sync(self._weigh, weigher, values, limiter=self._limiter)

    async def ping(self, timeout_s: float) -> None:
        """``SELECT 1`` within ``timeout_s``; the thread is abandoned if it takes longer."""
        try:
            with anyio.fail_after(timeout_s):
                await anyio.to_thread.run_sync(
                    self._run, "SELECT 1", (), limiter=self._limiter, abandon_on_cancel=True
                )
        except TimeoutError:
            raise DatabaseUnavailable("TimeoutError") from None

    async def _query(self, entity: str, sql: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        started = time.perf_counter()
        try:
            rows = await anyio.to_thread.run_sync(self._run, sql, args, limiter=self._limiter)
        except DatabaseUnavailable:
            MYSQL_QUERIES.labels(entity, "error").inc()
            raise
        MYSQL_QUERIES.labels(entity, "ok").inc()
        MYSQL_QUERY_SECONDS.labels(entity).observe(time.perf_counter() - started)
        return rows

    def _weigh(self, weigher: Weigher, values: Sequence[str]) -> dict[str, str]:
        def query(sql: str, args: tuple[str, ...]) -> tuple[str, ...]:
            rows = self._run(sql, args)
            return tuple(str(v) for v in rows[0].values())

        return weigher.weigh(values, query)

    def _run(self, sql: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        try:
            conn = self._pool.connection()
            try:
                with conn.cursor() as cur:
                    cur.execute(sql, args)
                    return list(cur.fetchall())
            finally:
                conn.close()  # back to the pool
        except pymysql.MySQLError as exc:
            raise DatabaseUnavailable(type(exc).__name__) from None
        except (OSError, PooledDBError) as exc:
            raise DatabaseUnavailable(type(exc).__name__) from None


