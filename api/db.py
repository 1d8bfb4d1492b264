"""MySQL access: a bounded DBUtils pool of PyMySQL connections, queried off the event loop."""

from __future__ import annotations

import time
from typing import Any

import anyio
import anyio.to_thread
import pymysql
import pymysql.cursors
from dbutils.pooled_db import PooledDB, PooledDBError

from cachetail import keyspace
from cachetail.settings import MySQLSettings
from metrics.api import MYSQL_QUERIES, MYSQL_QUERY_SECONDS

_USER_SQL = (
    f"SELECT {', '.join(keyspace.USER_COLUMNS)} FROM {keyspace.USERS_TABLE} WHERE id = %s"
)
_PRODUCTS_SQL = f"SELECT {', '.join(keyspace.PRODUCT_COLUMNS)} FROM {keyspace.PRODUCTS_TABLE}"


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

    async def user_row(self, user_id: int) -> dict[str, Any] | None:
        rows = await self._query("user", _USER_SQL, (user_id,))
        return rows[0] if rows else None

    async def product_rows(self, category: str | None) -> list[dict[str, Any]]:
        if category is None:
            return await self._query("products", _PRODUCTS_SQL + " ORDER BY id", ())
        return await self._query(
            "products", _PRODUCTS_SQL + " WHERE category = %s ORDER BY id", (category,)
        )

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

