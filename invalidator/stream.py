"""Opening the binlog stream with python-mysql-replication 1.0.17, on our terms.

- File + position (``is_mariadb=False``, ``resume_stream=True``): honoured by
  MySQL and MariaDB alike.  MariaDB GTID mode is avoided: 1.0.17 declares a
  14-byte dump payload and sends 15, and the server's later reset makes the
  library reconnect from the original GTID (duplicates, even a loop).
- The library never reconnects by itself: its own reconnect (after error
  2013/2006) restarts from the last *event* it saw, which may be inside a
  transaction.  ``pymysql_wrapper`` lets the stream connection be opened once;
  a second attempt raises :class:`StreamLost` out of the iterator and the
  worker reconnects from its saved position, with a fresh copy of the settings.
- ``blocking=True`` with ``slave_heartbeat``: on a quiet server a heartbeat
  arrives every few seconds, so the loop sees stop requests and pings the
  watchdog; ``read_timeout`` above the heartbeat notices a silent peer.
- Only the events and tables cachetail needs are decoded: ``only_tables`` and
  ``only_schemas`` drop other tables' table maps after reading their names and
  their rows events after reading the table id; ``freeze_schema`` parses each
  table id's map once (a DDL gives the table a new id); rows are decoded lazily,
  only where the mode needs them (see :mod:`invalidator.decode`).
"""

from __future__ import annotations

import socket
from typing import Any

import pymysql
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import HeartbeatLogEvent, QueryEvent, RotateEvent, XidEvent
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from cachetail.keyspace import PRODUCTS_TABLE, USERS_TABLE

from invalidator.position import Position
from invalidator.settings import InvalidatorSettings

ONLY_EVENTS = [WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent, XidEvent, QueryEvent,
               RotateEvent, HeartbeatLogEvent]
TABLES = [USERS_TABLE, PRODUCTS_TABLE]

# Connection-level failures: reconnect from the saved position.
CONNECTION_ERRORS = {2002, 2003, 2006, 2013, 2055, 1040, 1053, 1152, 1158, 1159, 1160, 1161, 1205}
BINLOG_FATAL = 1236
ER_PARSE = 1064


class StreamLost(ConnectionError):
    """The binlog connection dropped (the library tried to reconnect on its own)."""


def _guarded_connect() -> Any:
    opened = {"stream": False}

    def connect(**kwargs: Any) -> pymysql.connections.Connection:
        if "cursorclass" not in kwargs:  # the stream; the control connection has a DictCursor
            if opened["stream"]:
                raise StreamLost("binlog connection lost")
            opened["stream"] = True
        return pymysql.connect(**kwargs)

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


def open_stream(settings: InvalidatorSettings, position: Position) -> BinLogStreamReader:
    return BinLogStreamReader(
        connection_settings=connection_settings(settings),
        server_id=settings.server_id,
        blocking=True,
        resume_stream=True,
        log_file=position.log_file,
        log_pos=position.log_pos,
        is_mariadb=False,
        only_events=ONLY_EVENTS,
        only_tables=TABLES,
        only_schemas=[settings.mysql.database],
        freeze_schema=True,
        slave_heartbeat=settings.heartbeat_s,
        report_slave=(f"cachetail-invalidator@{socket.gethostname()}", "", "", 0),
        pymysql_wrapper=_guarded_connect(),
        enable_logging=False,
    )


def control_connection(settings: InvalidatorSettings) -> pymysql.connections.Connection:
    kwargs = settings.mysql.pymysql_kwargs()
    kwargs["database"] = None  # checks report a missing SELECT grant themselves
    return pymysql.connect(**kwargs)


def current_position(conn: pymysql.connections.Connection) -> Position:
    """The server's binlog end now (SHOW MASTER STATUS, or its MySQL 8.4 name)."""
    with conn.cursor() as cur:
        try:
            cur.execute("SHOW MASTER STATUS")
        except pymysql.err.ProgrammingError as exc:
            if exc.args[0] != ER_PARSE:
                raise
            cur.execute("SHOW BINARY LOG STATUS")
        row = cur.fetchone()
        if row is None:
            raise RuntimeError("SHOW MASTER STATUS returned nothing: log_bin is OFF")
        cur.execute("SELECT @@server_id")
        (source_id,) = cur.fetchone()
    return Position(str(row[0]), int(row[1]), int(source_id))


def source_id(conn: pymysql.connections.Connection) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT @@server_id")
        return int(cur.fetchone()[0])


def unusable_position(exc: BaseException) -> str | None:
    """``purged`` / ``bad_position`` when the server cannot serve our position, else None."""
    if not isinstance(exc, pymysql.err.MySQLError) or not exc.args or exc.args[0] != BINLOG_FATAL:
        return None
    message = str(exc.args[1] if len(exc.args) > 1 else "").lower()
    if "could not find first log file" in message or "purged" in message:
        return "purged"
    if "same server" in message or "server_uuid" in message:
        return None  # another replica with our server id: not a position problem
    if "impossible position" in message or "bogus" in message or "wrong offset" in message:
        return "bad_position"
    return None


def is_connection_error(exc: BaseException) -> bool:
    if isinstance(exc, (StreamLost, OSError, EOFError)):
        return True
    if isinstance(exc, pymysql.err.MySQLError) and exc.args and isinstance(exc.args[0], int):
        return exc.args[0] in CONNECTION_ERRORS or exc.args[0] >= 2000
    return isinstance(exc, pymysql.err.Error)
