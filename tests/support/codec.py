"""Helpers for the codec tests: a schema of their own on the session's MariaDB, and the
binlog read with python-mysql-replication as the invalidator reads it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pymysql
import pymysql.cursors
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import DeleteRowsEvent, RowsEvent, UpdateRowsEvent, WriteRowsEvent

from cachetail.codec import prepare_binlog_event
from cachetail.devstack import MariaDB
from invalidator.stream import ONLY_EVENTS

SCHEMA = "codec_t"
READER_SERVER_ID = 3_900_000_001


def connect(server: MariaDB, database: str = SCHEMA, **kwargs: Any) -> pymysql.connections.Connection:
    """Root on the codec schema, as the API connects: utf8mb4, time_zone '+00:00', DictCursor."""
    return server.connect(database=database, init_command="SET time_zone = '+00:00'",
                          cursorclass=pymysql.cursors.DictCursor, **kwargs)


def fresh_schema(server: MariaDB) -> pymysql.connections.Connection:
    server.query(f"DROP DATABASE IF EXISTS {SCHEMA}")
    server.query(f"CREATE DATABASE {SCHEMA} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    return connect(server)


def position(conn: pymysql.connections.Connection) -> tuple[str, int]:
    """The end of the binlog now: where a reader starts to see what follows."""
    with conn.cursor(pymysql.cursors.Cursor) as cur:
        cur.execute("SHOW MASTER STATUS")
        row = cur.fetchone()
    assert row is not None, "binlog is off"
    return str(row[0]), int(row[1])


@dataclass
class Image:
    table: str
    kind: str  # insert, before, after, delete
    values: dict[str, Any]
    none_sources: dict[str, str]


def binlog_images(server: MariaDB, begin: tuple[str, int], tables: list[str]) -> list[Image]:
    """Every row image of ``tables`` from ``begin`` to the end of the binlog, decoded by the
    library with the invalidator's stream options (invalidator/stream.py ``open_stream``),
    except that it stops at the end (blocking=False) and follows the codec schema."""
    stream = BinLogStreamReader(
        connection_settings={"host": server.host, "port": server.port, "user": "root", "password": ""},
        server_id=READER_SERVER_ID,
        blocking=False,
        resume_stream=True,
        log_file=begin[0],
        log_pos=begin[1],
        is_mariadb=False,
        only_events=ONLY_EVENTS,
        only_tables=tables,
        only_schemas=[SCHEMA],
        freeze_schema=True,
        enable_logging=False,
    )
    try:
        return [image for event in stream if isinstance(event, RowsEvent) for image in _images(event)]
    finally:
        stream.close()


def _images(event: RowsEvent) -> Iterator[Image]:
    prepare_binlog_event(event)
    for row in event.rows:
        if isinstance(event, UpdateRowsEvent):
            yield Image(event.table, "before", row["before_values"], row["before_none_sources"])
            yield Image(event.table, "after", row["after_values"], row["after_none_sources"])
        elif isinstance(event, WriteRowsEvent):
            yield Image(event.table, "insert", row["values"], row["none_sources"])
        elif isinstance(event, DeleteRowsEvent):
            yield Image(event.table, "delete", row["values"], row["none_sources"])
