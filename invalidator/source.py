"""The MySQL server behind the address: who it is, and where its binlog ends.

The address the worker connects to (an RDS or Aurora endpoint, a proxy, a VIP)
may lead to another server after a failover.  A binlog file and offset are
meaningful only on the server that wrote them, so every connection asks the
server who it is (``@@server_id``; ``@@server_uuid`` on MySQL) and the worker
compares that with the server its position belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pymysql

from invalidator.gtid import MARIADB, MYSQL
from invalidator.position import Position

ER_PARSE = 1064


@dataclass(frozen=True)
class Source:
    server_id: int
    server_uuid: str  # "" on MariaDB
    flavor: str  # gtid.MARIADB or gtid.MYSQL
    gtid_pos: str | None  # MariaDB @@gtid_binlog_pos, MySQL @@gtid_executed; None: GTIDs off

    @property
    def identity(self) -> tuple[int, str]:
        return self.server_id, self.server_uuid

    def __str__(self) -> str:
        return f"server_id {self.server_id}" + (f" ({self.server_uuid})" if self.server_uuid else "")


def _one(conn: pymysql.connections.Connection, sql: str, args: Any = None) -> tuple[Any, ...]:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        row = cur.fetchone()
    if row is None:
        raise RuntimeError(f"{sql} returned nothing")
    return tuple(row.values()) if isinstance(row, dict) else tuple(row)


def identity(conn: pymysql.connections.Connection) -> tuple[int, str, str]:
    """(server_id, server_uuid or "", flavor) of the server at the other end of ``conn``."""
    server_id, version = _one(conn, "SELECT @@server_id, @@version")
    if "mariadb" in str(version).lower():
        return int(server_id), "", MARIADB
    (uuid,) = _one(conn, "SELECT @@server_uuid")
    return int(server_id), str(uuid), MYSQL


def identify(conn: pymysql.connections.Connection) -> Source:
    server_id, uuid, flavor = identity(conn)
    if flavor == MARIADB:
        (pos,) = _one(conn, "SELECT @@global.gtid_binlog_pos")
        return Source(server_id, uuid, flavor, str(pos or ""))
    mode, executed = _one(conn, "SELECT @@global.gtid_mode, @@global.gtid_executed")
    on = str(mode).upper() == "ON"
    return Source(server_id, uuid, flavor, str(executed or "").replace("\n", "") if on else None)


def master_status(conn: pymysql.connections.Connection) -> tuple[Any, ...]:
    """SHOW MASTER STATUS, or its MySQL 8.4 name."""
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
    return tuple(row.values()) if isinstance(row, dict) else tuple(row)


def current_position(conn: pymysql.connections.Connection) -> Position:
    """The server's binlog end now, with the GTID state at exactly that point."""
    server_id, uuid, flavor = identity(conn)
    row = master_status(conn)
    log_file, log_pos = str(row[0]), int(row[1])
    gtid: str | None
    if flavor == MARIADB:
        # the state at this very file and offset, not @@gtid_binlog_pos a moment later
        (found,) = _one(conn, "SELECT BINLOG_GTID_POS(%s, %s)", (log_file, log_pos))
        gtid = None if found is None else str(found)
    else:
        executed = str(row[4] or "").replace("\n", "") if len(row) > 4 else ""
        (mode,) = _one(conn, "SELECT @@global.gtid_mode")
        gtid = executed if str(mode).upper() == "ON" else None
    return Position(log_file, log_pos, server_id, gtid, uuid)


def position_status(conn: pymysql.connections.Connection) -> tuple[Source, Position]:
    """Who the server is and where its binlog ends, on one connection."""
    source = identify(conn)
    row = master_status(conn)
    return source, Position(str(row[0]), int(row[1]), source.server_id, source.gtid_pos,
                            source.server_uuid)


def close_quietly(conn: pymysql.connections.Connection | None) -> None:
    """Close a connection that is done with, whatever state it is in."""
    if conn is not None:
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - a broken connection is closed as far as it can be
            pass
