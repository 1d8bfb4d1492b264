"""The images read from the raw bytes (invalidator/rowparse.py) are exactly what the
library's full decode reads: the needed columns (delete mode), the whole after image
(refresh mode), and the none_sources of its None values."""

from __future__ import annotations

from invalidator.settings import InvalidatorSettings
from support.binlog import read_events
from support.invalidator import master_position
from support.stack import Stack


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
