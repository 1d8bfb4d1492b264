"""The images read from the raw bytes (invalidator/rowparse.py) are exactly what the
library's full decode reads: the needed columns (delete mode), the whole after image
(refresh mode), and the none_sources of its None values."""

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
Image = dict[str, Any] | None
Triples = list[tuple[Image, Image, dict[str, str] | None]]


def project(image: Image, names: frozenset[str] | None) -> Image:
    return None if image is None or names is None else {k: v for k, v in image.items() if k in names}


def library_images(event: RowsEvent, after_names: frozenset[str] | None = None) -> Triples:
    """What the library decodes: before projected on NEEDED, after on ``after_names`` (all: None)."""
    prepare_binlog_event(event)
    keep = after_names or frozenset(c.name for c in event.columns)
    sources = None if after_names else keep  # delete mode has no use for them
    if isinstance(event, UpdateRowsEvent):
        return [(project(r["before_values"], NEEDED), project(r["after_values"], keep),
                 project(r["after_none_sources"], sources)) for r in event.rows]
    if isinstance(event, WriteRowsEvent):
        return [(None, project(r["values"], keep), project(r["none_sources"], sources)) for r in event.rows]
    return [(project(r["values"], NEEDED), None, None) for r in event.rows]


def read_events(settings: InvalidatorSettings, begin: tuple[str, int], end: tuple[str, int], fast: bool,
                full: bool = False, table: str = "users") -> list[Triples]:
    stream = open_stream(settings, Position(*begin), tables=(table,))
    out = []
    try:
        for event in stream:
            if isinstance(event, RowsEvent) and event.table == table:
                if fast:
                    triples = decode.images(event, NEEDED & {c.name for c in event.columns}, full_after=full)
                else:
                    triples = library_images(event, None if full else NEEDED)
                assert triples is not None, "the fast path must apply"
                out.append(list(triples))
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
