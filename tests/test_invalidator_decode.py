"""The needed-columns fast path reads exactly what the library's full decode reads."""

from __future__ import annotations

from typing import Any

from conftest import Stack
from invalidator import decode
from invalidator.position import Position
from invalidator.settings import InvalidatorSettings
from invalidator.stream import open_stream
from invalidator_support import master_position
from pymysqlreplication.event import HeartbeatLogEvent
from pymysqlreplication.row_event import RowsEvent, UpdateRowsEvent, WriteRowsEvent

from cachetail.codec import prepare_binlog_event

NEEDED = frozenset({"id", "username", "full_name", "code", "tiny", "big", "lat", "uid"})
Pairs = list[tuple[dict[str, Any] | None, dict[str, Any] | None]]


def project(image: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if image is None else {k: v for k, v in image.items() if k in NEEDED}


def library_images(event: RowsEvent) -> Pairs:
    prepare_binlog_event(event)
    if isinstance(event, UpdateRowsEvent):
        return [(project(r["before_values"]), project(r["after_values"])) for r in event.rows]
    if isinstance(event, WriteRowsEvent):
        return [(None, project(r["values"])) for r in event.rows]
    return [(project(r["values"]), None) for r in event.rows]


def read_events(settings: InvalidatorSettings, begin: tuple[str, int], end: tuple[str, int], fast: bool
                ) -> list[Pairs]:
    stream = open_stream(settings, Position(*begin))
    out = []
    try:
        for event in stream:
            if isinstance(event, RowsEvent) and event.table == "users":
                pairs = decode.images(event, NEEDED) if fast else library_images(event)
                assert pairs is not None, "the fast path must apply to users"
                out.append(list(pairs))
            if isinstance(event, HeartbeatLogEvent) or (stream.log_file, stream.log_pos) >= end:
                break
    finally:
        stream.close()
    return out


def test_fast_images_equal_library_images_across_column_types(stack: Stack, mariadb_factory) -> None:
    server = mariadb_factory()
    conn = server.connect(database="cachelab")
    with conn.cursor() as cur:
        cur.execute("ALTER TABLE users ADD COLUMN score DECIMAL(12,3) NULL, ADD COLUMN bio TEXT NULL,"
                    " ADD COLUMN tags SET('a','b','c') NULL, ADD COLUMN mood ENUM('x','y') NULL,"
                    " ADD COLUMN born DATE NULL, ADD COLUMN seen DATETIME(3) NULL, ADD COLUMN ratio DOUBLE NULL,"
                    " ADD COLUMN big BIGINT NULL, ADD COLUMN tiny TINYINT NULL, ADD COLUMN code CHAR(3) NULL,"
                    " ADD COLUMN blob1 MEDIUMBLOB NULL, ADD COLUMN bits BIT(10) NULL, ADD COLUMN t TIME(2) NULL,"
                    " ADD COLUMN ts TIMESTAMP(6) NULL, ADD COLUMN lat VARCHAR(10) CHARACTER SET latin1 NULL,"
                    " ADD COLUMN uid BINARY(16) NULL")
        begin = master_position(conn)
        cur.execute("INSERT INTO users (id, username, email, full_name, score, bio, tags, mood, born, seen, ratio,"
                    " big, tiny, code, blob1, bits, t, ts) VALUES"
                    " (20001, 'f1', 'e1', 'Zoë 🚀', 12.5, REPEAT('x', 300), 'a,c', 'y', '1999-12-31',"
                    "  '2024-02-03 04:05:06.789', 0.5, -9000000000, -3, 'abc', REPEAT('b', 70000), b'1010101010',"
                    "  '12:34:56.78', '2030-01-01 00:00:00.123456'),"
                    " (20002, 'f2', 'e2', 'N', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
                    "  NULL, NULL, NULL),"
                    " (20003, 'f3', 'e3', REPEAT('é', 100), -0.001, '', '', 'x', NULL, NULL, NULL, 1, 1, '',"
                    "  '', b'0', NULL, NULL)")
        cur.execute("UPDATE users SET lat = _latin1 X'41818D8F909DE9', uid = UNHEX('00112233445566778899aabbcc000000')"
                    " WHERE id IN (20001, 20003)")
        cur.execute("UPDATE users SET id = id + 100, bio = CONCAT(COALESCE(bio, ''), '!') WHERE id > 20000")
        cur.execute("UPDATE users SET full_name = CONCAT(full_name, '.') WHERE id BETWEEN 1 AND 300")
        cur.execute("DELETE FROM users WHERE id > 20000 OR id BETWEEN 290 AND 300")
        end = master_position(conn)
    conn.close()
    env = {**stack.invalidator_env(), "DB_PORT": str(server.port), "INVALIDATOR_HEARTBEAT_S": "0.5"}
    settings = InvalidatorSettings.from_env(env)
    slow = read_events(settings, begin, end, fast=False)
    fast = read_events(settings, begin, end, fast=True)
    assert sum(len(e) for e in slow) == 3 + 2 + 3 + 300 + 14
    assert fast == slow
