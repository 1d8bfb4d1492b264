"""Whole after images read by invalidator/rowparse.py equal the library's, type by type.

Refresh mode serializes these images (RowCodec.from_binlog), so they must be the very
values python-mysql-replication 1.0.17 decodes: same types, same None for zero dates,
the same none_sources.  Every type the full parser reads is here, at its edges, with
NULLs; a type it does not read leaves the table to the library.
"""

from __future__ import annotations

from collections.abc import Iterator

import pymysql
import pytest

from invalidator.settings import InvalidatorSettings
from support.binlog import read_events
from support.invalidator import master_position
from support.stack import Stack

COLUMNS = """
  id INT UNSIGNED PRIMARY KEY,
  ti TINYINT NULL, tu TINYINT UNSIGNED NULL, si SMALLINT NULL, su SMALLINT UNSIGNED NULL,
  mi MEDIUMINT NULL, mu MEDIUMINT UNSIGNED NULL, ii INT NULL, bi BIGINT NULL, bu BIGINT UNSIGNED NULL,
  fl FLOAT NULL, db DOUBLE NULL,
  vs VARCHAR(20) NULL, vl VARCHAR(300) NULL, ch CHAR(4) NULL, la VARCHAR(10) CHARACTER SET latin1 NULL,
  bn BINARY(4) NULL, vb VARBINARY(10) NULL, tx TEXT NULL, bl BLOB NULL, mb MEDIUMBLOB NULL,
  t0 TIMESTAMP NULL DEFAULT NULL, t3 TIMESTAMP(3) NULL DEFAULT NULL, t6 TIMESTAMP(6) NULL DEFAULT NULL,
  d0 DATETIME NULL, d1 DATETIME(1) NULL, d4 DATETIME(4) NULL, d6 DATETIME(6) NULL,
  da DATE NULL, yr YEAR NULL,
  en ENUM('a', 'zoë', 'c') NULL, e2 ENUM({members}) NULL
""".format(members=", ".join(f"'m{i}'" for i in range(300)))  # e2: more than 255 members, a 2-byte index
ROWS = [
    "(1, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, -9223372036854775808,"
    " 18446744073709551615, -1.5, 2.2250738585072014e-308, 'zoë 🚀', REPEAT('é', 300), 'ab',"
    " _latin1 X'41818D8F909DE9', X'00FF0102', X'', REPEAT('x', 300), X'00FF', REPEAT('b', 70000),"
    " '2038-01-19 03:14:07', '2001-02-03 04:05:06.789', '1970-01-01 00:00:01.000001',"
    " '9999-12-31 23:59:59', '1000-01-01 00:00:00.5', '2024-02-29 12:00:00.1234',"
    " '2024-02-29 12:00:00.999999', '9999-12-31', 2155, 'zoë', 'm299')",
    "(2, 127, 0, 32767, 0, 8388607, 0, 2147483647, 9223372036854775807, 0, 3.4e38, -0.0,"
    " '', '', '', '', X'', X'FF', '', X'', X'', '1970-01-01 00:00:01', '1999-12-31 23:59:59.001',"
    " '2000-01-01 00:00:00.000010', '0000-00-00 00:00:00', '2000-00-00 00:00:00.0',"
    " '2000-01-00 10:00:00.0001', '2000-01-01 00:00:00.000001', '0000-00-00', 0, 'no such', 'm0')",
    "(3" + ", NULL" * 31 + ")",
    "(4, 0, 1, 0, 1, -1, 1, -1, -1, 1, 0.1, 0.1, 'a', 'b', 'c', 'd', X'01', X'02', 'e', X'03', X'04',"
    " '2020-01-01 00:00:00', '2020-01-01 00:00:00.000', '2020-01-01 00:00:00.000000',"
    " '2020-01-01 00:00:00', '2020-01-01 00:00:00.0', '2020-01-01 00:00:00.0000',"
    " '2020-01-01 00:00:00.000000', '2020-01-01', 1901, 'a', 'm255')",
]


def differences(mine: list, theirs: list) -> list[tuple[int, int, str, object, object]]:
    """(row, image, column, ours, the library's) wherever the two differ."""
    out = []
    for r, (a, b) in enumerate(zip(mine, theirs, strict=True)):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            for name in sorted(set(x or {}) | set(y or {})):
                u, v = (x or {}).get(name, "<missing>"), (y or {}).get(name, "<missing>")
                if u != v or type(u) is not type(v):
                    out.append((r, i, name, u, v))
    return out


@pytest.fixture
def types_table(stack: Stack) -> Iterator[pymysql.connections.Connection]:
    conn = stack.mariadb.connect(database="cachelab", init_command="SET time_zone = '+00:00', sql_mode = ''")
    with conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS rp_types")
        cur.execute(f"CREATE TABLE rp_types ({COLUMNS}) CHARSET utf8mb4")
    yield conn
    with conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS rp_types")
    conn.close()


def test_whole_after_images_equal_the_library_for_every_type_read(
        stack: Stack, types_table: pymysql.connections.Connection) -> None:
    with types_table.cursor() as cur:
        begin = master_position(types_table)
        cur.execute("INSERT INTO rp_types VALUES " + ", ".join(ROWS))
        cur.execute("UPDATE rp_types SET id = id + 10, vs = CONCAT(COALESCE(vs, ''), '.')")
        cur.execute("UPDATE rp_types SET ti = NULL, t0 = NULL, da = NULL WHERE id IN (11, 12)")
        cur.execute("DELETE FROM rp_types WHERE id > 12")
        end = master_position(types_table)
    settings = InvalidatorSettings.from_env({**stack.invalidator_env(), "INVALIDATOR_HEARTBEAT_S": "0.5"})
    library = read_events(settings, begin, end, fast=False, full=True, table="rp_types")
    ours = read_events(settings, begin, end, fast=True, full=True, table="rp_types")
    assert sum(len(e) for e in library) == 4 + 4 + 2 + 2
    assert any(t[1] and t[1]["da"] is None and t[2] and t[2]["da"] == "out of date range"
               for e in library for t in e), "the zero date must be in the test"
    assert {t[1]["en"] for e in library for t in e if t[1]} == {"zoë", "", "a", None}  # '' the error value
    assert {t[1]["e2"] for e in library for t in e if t[1]} >= {"m299", "m255", "m0"}
    for mine, theirs in zip(ours, library, strict=True):
        assert differences(mine, theirs) == []


def test_a_type_not_read_leaves_the_whole_image_to_the_library(
        stack: Stack, types_table: pymysql.connections.Connection) -> None:
    with types_table.cursor() as cur:
        cur.execute("ALTER TABLE rp_types ADD COLUMN price DECIMAL(10, 2) NULL")
        begin = master_position(types_table)
        cur.execute("INSERT INTO rp_types (id, price) VALUES (1, 9.99)")
        end = master_position(types_table)
    settings = InvalidatorSettings.from_env({**stack.invalidator_env(), "INVALIDATOR_HEARTBEAT_S": "0.5"})
    with pytest.raises(AssertionError, match="the fast path must apply"):
        read_events(settings, begin, end, fast=True, full=True, table="rp_types")
    # the key columns alone are still read from the bytes (DECIMAL is sized, not read)
    (rows,) = read_events(settings, begin, end, fast=True, full=False, table="rp_types")
    assert rows == [(None, {"id": 1}, None)]  # delete mode has no use for none_sources
