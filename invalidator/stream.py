"""Opening the binlog stream with python-mysql-replication 1.0.17, on our terms.

- File + position (``is_mariadb=False``, ``resume_stream=True``): honoured by
  MySQL and MariaDB alike, and used only on the server the position belongs to.
- From a GTID state, on another server (a promoted replica):
  - MariaDB: the same file + position dump request with an empty file name, after
    ``SET @slave_connect_state`` (and strict mode) on the stream connection: that is
    how a MariaDB replica asks for GTID mode.  The library's own MariaDB GTID request
    (``is_mariadb=True, auto_position=...``) is malformed in 1.0.17 (it declares a
    14-byte payload and sends 15) and is not used; a test tells when that changes.
  - MySQL: the library's documented ``auto_position`` (COM_BINLOG_DUMP_GTID).
- Every stream connection is checked before the dump request: the server at the
  other end must be the one the worker planned for (:class:`ServerChanged`
  otherwise), since the address may have moved since the worker looked.
- The library never reconnects by itself: its own reconnect (after error
  2013/2006) restarts from the last *event* it saw, which may be inside a
  transaction.  ``pymysql_wrapper`` lets the stream connection be opened once;
  a second attempt raises :class:`StreamLost` out of the iterator and the
  worker reconnects from its saved position, with a fresh copy of the settings.
- ``blocking=True`` with ``slave_heartbeat``: on a quiet server a heartbeat
  arrives every few seconds, so the loop sees stop requests and pings the
  watchdog; ``read_timeout`` above the heartbeat notices a silent peer.
- Only the events and tables cachetail needs are decoded: the stream connection
  (:class:`~invalidator.packets.BinlogConnection`) reads the binlog in large chunks and
  drops other events, other tables' table maps and their rows events by peeking at the
  raw bytes, before the library builds anything; ``only_tables`` and ``only_schemas``
  stay as the library's own filter behind it; ``freeze_schema`` parses each
  table id's map once (a DDL gives the table a new id); rows are decoded lazily,
  only where the mode needs them (see :mod:`invalidator.decode`).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Sequence
from typing import Any

import pymysql
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import (
    GtidEvent, HeartbeatLogEvent, MariadbGtidEvent, QueryEvent, RotateEvent, XidEvent,
)
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from invalidator.errors import ServerChanged, StreamLost
from invalidator.gtid import MARIADB, MYSQL
from invalidator.packets import BinlogConnection, Claim, Filter
from invalidator.position import Position
from invalidator.settings import InvalidatorSettings
from invalidator.source import Source, identity

ONLY_EVENTS = [WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent, XidEvent, QueryEvent,
               RotateEvent, HeartbeatLogEvent, MariadbGtidEvent, GtidEvent]


def _guarded_connect(expect: Source | None, gtid_state: str | None, binlog_filter: Filter,
                     opened_as: list[BinlogConnection]) -> Any:
    """The library's connect: the stream connection once, checked, set up for a GTID resume,
    reading the binlog in chunks and dropping other tables' events (:mod:`invalidator.packets`)."""
    opened = {"stream": False}

    def connect(**kwargs: Any) -> pymysql.connections.Connection:
        if "cursorclass" in kwargs:  # the library's control connection has a DictCursor
            return pymysql.connect(**kwargs)
        if opened["stream"]:
            raise StreamLost("binlog connection lost")
        opened["stream"] = True
        conn = BinlogConnection(**kwargs, binlog_filter=binlog_filter)
        opened_as.append(conn)
        try:
            if expect is not None:
                server_id, uuid, _ = identity(conn)
                if (server_id, uuid) != expect.identity:
                    raise ServerChanged(f"the address now leads to server_id {server_id}, not {expect}")
            if gtid_state is not None and expect is not None and expect.flavor == MARIADB:
                with conn.cursor() as cur:
                    cur.execute("SET @slave_connect_state = %s", (gtid_state,))
                    cur.execute("SET @slave_gtid_strict_mode = 1")
                    cur.execute("SET @slave_gtid_ignore_duplicates = 0")
        except BaseException:
            conn.close()
            raise
        return conn

    return connect


def connection_settings(settings: InvalidatorSettings) -> dict[str, Any]:
    """A fresh dict each time: the library mutates the one it is given."""
    db = settings.mysql
    conn: dict[str, Any] = {
        "host": db.host,
        "port": db.port,
        "user": db.user,
        "password": db.password.reveal(),
        "connect_timeout": db.connect_timeout_s,
        # Heartbeats arrive every heartbeat_s; three missed ones mean a dead peer.
        "read_timeout": max(3 * settings.heartbeat_s, 5.0),
        "write_timeout": db.read_timeout_s,
    }
    if db.ssl_ca:
        conn["ssl"] = {"ca": db.ssl_ca}
    return conn


class Stream:
    """The library's reader, with the rows events the connection read itself
    (:class:`~invalidator.packets.RowsPacket`) yielded in their place in the binlog."""

    def __init__(self, reader: BinLogStreamReader, binlog_filter: Filter,
                 opened: list[BinlogConnection]) -> None:
        self.reader = reader
        self.filter = binlog_filter
        self._opened = opened
        binlog_filter.table_maps = lambda: reader.table_map  # replaced at every real rotate

    def __iter__(self) -> Iterator[Any]:
        rows = self.filter
        for event in self.reader:
            if rows.rows:
                yield from rows.take()
            yield event
        if rows.rows:  # a non-blocking stream reached the end
            yield from rows.take()

    @property
    def log_file(self) -> str | None:
        return self.reader.log_file  # type: ignore[no-any-return]  # the library's BinLogStreamReader is unannotated

    @property
    def log_pos(self) -> int | None:
        return self.reader.log_pos  # type: ignore[no-any-return]  # the library's BinLogStreamReader is unannotated

    def pending(self) -> bool:
        """More binlog is already here (read, or waiting on the socket)."""
        return bool(self.filter.rows) or (bool(self._opened) and self._opened[-1].pending())

    def close(self) -> None:
        self.reader.close()


def open_stream(settings: InvalidatorSettings, position: Position, source: Source | None = None,
                by_gtid: bool = False, *, tables: Sequence[str], claim: Claim | None = None) -> Stream:
    """Follow from ``position``: by its file and offset on ``source`` (the server it belongs
    to), or with ``by_gtid`` from its GTID state on ``source``, any server with that history.
    ``claim``: which followed tables' rows events are read from their bytes, not by the library."""
    if by_gtid and (source is None or position.gtid is None):
        raise ValueError("a GTID resume needs the server and the GTID state")
    gtid = position.gtid if by_gtid else None
    mysql_gtid = gtid if source is not None and source.flavor == MYSQL else None
    binlog_filter = Filter([settings.mysql.database], tables, claim)
    opened: list[BinlogConnection] = []
    reader = BinLogStreamReader(
        connection_settings=connection_settings(settings),
        server_id=settings.server_id,
        blocking=True,
        resume_stream=True,
        # MariaDB GTID mode: an empty file name; the server starts from @slave_connect_state
        log_file="" if gtid is not None else position.log_file,
        log_pos=4 if gtid is not None else position.log_pos,
        auto_position=mysql_gtid,
        is_mariadb=False,
        only_events=ONLY_EVENTS,
        only_tables=list(tables),
        only_schemas=[settings.mysql.database],
        freeze_schema=True,
        slave_heartbeat=settings.heartbeat_s,
        report_slave=(f"cachetail-invalidator@{socket.gethostname()}", "", "", 0),
        pymysql_wrapper=_guarded_connect(source, gtid, binlog_filter, opened),
        enable_logging=False,
    )
    return Stream(reader, binlog_filter, opened)


def control_connection(settings: InvalidatorSettings) -> pymysql.connections.Connection:
    kwargs = settings.mysql.pymysql_kwargs()
    kwargs["database"] = None  # checks report a missing SELECT grant themselves
    return pymysql.connect(**kwargs)
