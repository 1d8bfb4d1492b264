"""MySQL access: bounded DBUtils pools of PyMySQL connections, queried off the event loop.

Two addresses: the primary (DB_HOST), and where reads go (DB_READ_HOST, by default the
same server, then with one pool).  A read names its :class:`Source`: the replica, after it
has applied a GTID state (one round trip: the wait and the SELECT go together), or the
primary.  A replica that times out or fails is never the end of a read: it goes to the
primary, which has every committed transaction.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import anyio
import anyio.to_thread
import pymysql
import pymysql.cursors
from dbutils.pooled_db import PooledDB, PooledDBError
from pymysql.constants import CLIENT

from cachetail import gtid
from cachetail.collation import Weigher
from cachetail.gtid import GtidState
from cachetail.mysqlquery import run_once
from cachetail.schema import Entity, Filter, Listing
from cachetail.settings import MySQLSettings
from metrics.api import (FRESHNESS_WAIT_SECONDS, MYSQL_QUERIES, MYSQL_QUERY_SECONDS, PRIMARY_READS,
                         REPLICA_WAITS)


class DatabaseUnavailable(Exception):
    """MySQL could not answer; carries only the driver's error class name, never SQL text."""

    def __init__(self, error_class: str) -> None:
        self.error_class = error_class
        super().__init__(f"MySQL unavailable ({error_class})")


class Source(NamedTuple):
    """Where one read goes: the read address once it has applied ``wait`` (None: at once),
    or the primary (``why``: the reason, a metric label)."""

    primary: bool = False
    wait: GtidState | None = None
    why: str = ""


REPLICA = Source()


def primary(why: str) -> Source:
    return Source(primary=True, why=why)


@dataclass(frozen=True)
class ReadServer:
    """What the read address turned out to be (see :meth:`Database.probe`)."""

    kind: str  # PRIMARY (the primary itself), GTID (waits on GTIDs) or LAG (DB_READ_MAX_LAG_MS)
    flavor: str  # of the primary: gtid.MARIADB or gtid.MYSQL
    description: str

    @property
    def wait_sql(self) -> str:
        """The replica's position before the wait, and the wait: 0 when reached in time."""
        if self.flavor == gtid.MARIADB:
            return "SELECT @@global.gtid_slave_pos AS ct_before, MASTER_GTID_WAIT(%s, %s) AS ct_wait; "
        return ("SELECT @@global.gtid_executed AS ct_before,"
                " WAIT_FOR_EXECUTED_GTID_SET(%s, %s) AS ct_wait; ")


PRIMARY, GTID, LAG = "primary", "gtid", "lag"


class ReadConfigError(Exception):
    """The read address cannot serve fills as configured; the message names the setting."""


class Database:
    """Runs the API's few SELECTs in worker threads, at most ``pool_size`` at a time per address."""

    def __init__(self, settings: MySQLSettings, pool_size: int, reads: MySQLSettings | None = None,
                 wait_ms: int = 100, max_lag_ms: int = 0) -> None:
        self._pool = _pool(settings, pool_size)
        # As many threads as connections: a query thread never waits on the pool.
        self._limiter = anyio.CapacityLimiter(pool_size)
        self._reads_settings = reads
        self._replica: PooledDB | None = None
        self._replica_limiter = anyio.CapacityLimiter(pool_size)
        if reads is not None:  # the wait and its SELECT go in one round trip
            self._replica = _pool(reads, pool_size, client_flag=CLIENT.MULTI_STATEMENTS)
        self._wait_s = wait_ms / 1000
        self._max_lag_ms = max_lag_ms
        self.server: ReadServer | None = None  # known once probed; until then reads go to the primary

    @property
    def separate(self) -> bool:
        """Reads have an address of their own (DB_READ_HOST)."""
        return self._replica is not None

    def close(self) -> None:
        self._pool.close()
        if self._replica is not None:
            self._replica.close()

    # ------------------------------------------------------------------ probing

    def probe(self) -> ReadServer:
        """Find out what the read address is (a blocking call: run it in a thread).  Raises
        pymysql's errors when a server is unreachable, ReadConfigError when the replica
        cannot serve fills as configured."""
        flavor = _flavor(self._pool)
        if self._replica is None:
            self.server = ReadServer(PRIMARY, flavor, "the primary (DB_HOST)")
            return self.server
        assert self._reads_settings is not None
        where = f"DB_READ_HOST {self._reads_settings.host}:{self._reads_settings.port}"
        if _identity(self._replica) == _identity(self._pool):
            self.server = ReadServer(PRIMARY, flavor, f"{where}, the primary itself")
        elif _flavor(self._replica) != flavor:
            raise ReadConfigError(f"{where} is not the same kind of server as DB_HOST (MariaDB and MySQL)")
        elif self._max_lag_ms:
            self.server = ReadServer(LAG, flavor, f"{where}, read {self._max_lag_ms} ms after a change"
                                     " (DB_READ_MAX_LAG_MS)")
        else:
            why = _cannot_wait(self._replica, flavor)
            if why:
                raise ReadConfigError(f"{where} cannot wait for a GTID ({why}): set DB_READ_MAX_LAG_MS"
                                      " to read the primary for that long after a change, or point"
                                      " DB_READ_HOST at the primary")
            self.server = ReadServer(GTID, flavor, f"{where}, a replica waited on by GTID")
        return self.server

    # ------------------------------------------------------------------ reads

    async def entity_row(self, entity: Entity, values: Sequence[Any],
                         source: Source = REPLICA) -> dict[str, Any] | None:
        rows = await self._query(entity.name, entity.select_sql, tuple(values), source)
        return rows[0] if rows else None

    async def list_rows(self, listing: Listing, filters: Sequence[tuple[Filter, Any]],
                        after: Sequence[Any] | None, source: Source = REPLICA) -> list[dict[str, Any]]:
        """One page of a list (see :meth:`cachetail.schema.Listing.page_sql`)."""
        sql, args = listing.page_sql(filters, after)
        return await self._query(listing.name, sql, args, source)

    async def weights(self, weigher: Weigher, values: Sequence[str]) -> dict[str, str]:
        """Collation weights of list filter values (remembered ones without a query)."""
        known = {v: w for v in values if (w := weigher.known(v)) is not None}
        if len(known) == len(values):
            return known
        return await anyio.to_thread.run_sync(self._weigh, weigher, values, limiter=self._limiter)

    async def ping(self, timeout_s: float, reads: bool = False) -> None:
        """``SELECT 1`` within ``timeout_s`` on the primary (``reads``: the read address);
        the thread is abandoned if it takes longer."""
        pool = self._replica if reads and self._replica is not None else self._pool
        try:
            with anyio.fail_after(timeout_s):
                await anyio.to_thread.run_sync(
                    _run, pool, "SELECT 1", (), limiter=self._limiter, abandon_on_cancel=True)
        except TimeoutError:
            raise DatabaseUnavailable("TimeoutError") from None

    async def _query(self, name: str, sql: str, args: tuple[Any, ...], source: Source) -> list[dict[str, Any]]:
        started = time.perf_counter()
        try:
            rows = await self._read(sql, args, source)
        except DatabaseUnavailable:
            MYSQL_QUERIES.labels(name, "error").inc()
            raise
        MYSQL_QUERIES.labels(name, "ok").inc()
        MYSQL_QUERY_SECONDS.labels(name).observe(time.perf_counter() - started)
        return rows

    async def _read(self, sql: str, args: tuple[Any, ...], source: Source) -> list[dict[str, Any]]:
        server = self.server
        if self._replica is None or (server is not None and server.kind == PRIMARY):
            return await anyio.to_thread.run_sync(_run, self._pool, sql, args, limiter=self._limiter)
        if server is None or source.primary:  # unprobed: what the replica is is not known yet
            PRIMARY_READS.labels(source.why if server is not None else "unprobed").inc()
            return await anyio.to_thread.run_sync(_run, self._pool, sql, args, limiter=self._limiter)
        wait = source.wait if server.kind == GTID and source.wait is not None and not source.wait.empty else None
        try:
            started = time.perf_counter()
            rows, waited = await anyio.to_thread.run_sync(
                self._run_replica, server, sql, args, wait, limiter=self._replica_limiter)
        except DatabaseUnavailable:
            PRIMARY_READS.labels("replica_error").inc()
            return await anyio.to_thread.run_sync(_run, self._pool, sql, args, limiter=self._limiter)
        if waited is not None:  # the replica had not applied it yet
            REPLICA_WAITS.labels("ok" if waited else "timeout").inc()
            FRESHNESS_WAIT_SECONDS.labels("replica").observe(time.perf_counter() - started)
        if rows is None:  # timed out: the primary has every committed transaction
            PRIMARY_READS.labels("timeout").inc()
            return await anyio.to_thread.run_sync(_run, self._pool, sql, args, limiter=self._limiter)
        return rows

    def _run_replica(self, server: ReadServer, sql: str, args: tuple[Any, ...], wait: GtidState | None
                     ) -> tuple[list[dict[str, Any]] | None, bool | None]:
        """The rows from the replica (None: it did not apply ``wait`` in time), and whether it
        had to wait (None: it had applied ``wait`` already, or there was nothing to wait for)."""
        assert self._replica is not None
        if wait is None:
            return _run(self._replica, sql, args), None
        try:
            conn = self._replica.connection()
            try:
                with conn.cursor() as cur:
                    cur.execute(server.wait_sql + sql, (str(wait), self._wait_s, *args))
                    first = cur.fetchone()
                    cur.nextset()
                    rows = list(cur.fetchall())  # read even after a timeout: the connection goes back clean
            finally:
                conn.close()
        except (pymysql.MySQLError, OSError, PooledDBError) as exc:
            raise DatabaseUnavailable(type(exc).__name__) from None
        reached = first is not None and first["ct_wait"] == 0
        before = str(first["ct_before"] or "") if first is not None else ""
        try:
            had = gtid.parse(server.flavor, before).covers(wait)
        except gtid.GtidError:
            had = False
        return (rows if reached else None), (None if had else reached)

    def _weigh(self, weigher: Weigher, values: Sequence[str]) -> dict[str, str]:
        def query(sql: str, args: tuple[str, ...]) -> tuple[str, ...]:
            rows = _run(self._pool, sql, args)
            return tuple(str(v) for v in rows[0].values())

        return weigher.weigh(values, query)


def _pool(settings: MySQLSettings, size: int, **extra: Any) -> PooledDB:
    return PooledDB(
        creator=pymysql,
        mincached=0,
        maxcached=size,
        maxconnections=size,
        blocking=True,
        # One round trip a query.  No PING as a connection leaves the pool: a dead one fails
        # its query, and DBUtils reconnects and runs it again (SteadyDB's "tough" cursor,
        # outside transactions; these are all single SELECTs).  No ROLLBACK as it goes back:
        # the connections are autocommit, and no query here opens a transaction.
        ping=0,
        reset=False,
        cursorclass=pymysql.cursors.DictCursor,
        **settings.pymysql_kwargs(),
        **extra,
    )


def _run(pool: PooledDB, sql: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
    try:
        return run_once(pool.connection(), sql, args)  # closing hands it back to the pool
    except pymysql.MySQLError as exc:
        raise DatabaseUnavailable(type(exc).__name__) from None
    except (OSError, PooledDBError) as exc:
        raise DatabaseUnavailable(type(exc).__name__) from None


def _one(pool: PooledDB, sql: str) -> dict[str, Any]:
    rows = run_once(pool.connection(), sql)
    return dict(rows[0]) if rows else {}


def _flavor(pool: PooledDB) -> str:
    version = str(_one(pool, "SELECT VERSION() AS v")["v"])
    return gtid.MARIADB if "mariadb" in version.lower() else gtid.MYSQL


def _identity(pool: PooledDB) -> tuple[Any, ...]:
    """The server behind a pool: ``@@server_id``, and ``@@server_uuid`` where there is one."""
    row = _one(pool, "SELECT @@server_id AS id")
    try:
        uuid = _one(pool, "SELECT @@server_uuid AS u")["u"]
    except pymysql.MySQLError:  # MariaDB has none
        uuid = ""
    return row["id"], uuid


def _cannot_wait(pool: PooledDB, flavor: str) -> str:
    """Why the replica cannot wait for a GTID ('' when it can)."""
    if flavor == gtid.MARIADB:
        return ""  # MASTER_GTID_WAIT on every MariaDB since 10.0.9
    try:
        _one(pool, "SELECT @@aurora_version AS v")
        return "an Aurora reader: it shares the writer's storage and applies no GTIDs"
    except pymysql.MySQLError:
        pass
    mode = str(_one(pool, "SELECT @@global.gtid_mode AS m")["m"]).upper()
    return "" if mode == "ON" else f"gtid_mode={mode}"
