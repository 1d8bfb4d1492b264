"""The compiled row walk (invalidator/_rowwalk.c) records what the Python path records.

For every rows event of a table with every type it writes, at their edges, with NULLs,
key changes, single- and multi-row events: the batch it makes is the Python path's,
entry for entry, in the same order and byte for byte, in delete and refresh mode.  What
it cannot handle it hands back (False), and the Python path decides.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
from pymysqlreplication.event import HeartbeatLogEvent

from invalidator.apply import OP_DELETE, OP_SET, Batch, write_prefix
from invalidator import decode, fastrows
from invalidator.catalog import Followed, Weights
from invalidator.packets import RowsPacket
from invalidator.position import Position
from invalidator.settings import InvalidatorSettings
from invalidator.stream import open_stream
from support.binlog import followed_tables
from support.invalidator import master_position
from support.stack import Stack

COLUMNS = """
  id BIGINT NOT NULL PRIMARY KEY,
  ti TINYINT NULL, tu TINYINT UNSIGNED NULL, si SMALLINT NULL, su SMALLINT UNSIGNED NULL,
  mi MEDIUMINT NULL, mu MEDIUMINT UNSIGNED NULL, ii INT NULL, iu INT UNSIGNED NULL, bu BIGINT UNSIGNED NULL,
  skip_db DOUBLE NULL, skip_bl BLOB NULL,
  vs VARCHAR(20) NULL, vl VARCHAR(300) NULL, ch CHAR(4) NULL, tx TEXT NULL, mt MEDIUMTEXT NULL,
  skip_la VARCHAR(10) CHARACTER SET latin1 NULL, skip_yr YEAR NULL,
  t0 TIMESTAMP NULL DEFAULT NULL, t1 TIMESTAMP(1) NULL DEFAULT NULL, t3 TIMESTAMP(3) NULL DEFAULT NULL,
  t6 TIMESTAMP(6) NULL DEFAULT NULL,
  d0 DATETIME NULL, d1 DATETIME(1) NULL, d2 DATETIME(2) NULL, d5 DATETIME(5) NULL, d6 DATETIME(6) NULL,
  da DATE NULL
"""
SERVED = ["da", "d6", "d5", "d2", "d1", "d0", "t6", "t3", "t1", "t0", "mt", "tx", "ch", "vl", "vs",
          "bu", "iu", "ii", "mu", "mi", "su", "si", "tu", "ti", "id"]  # not the table's order
NAMES = ("id, ti, tu, si, su, mi, mu, ii, iu, bu, skip_db, skip_bl, vs, vl, ch, tx, mt, skip_la, skip_yr,"
         " t0, t1, t3, t6, d0, d1, d2, d5, d6, da")
ROWS = [
    "(-9223372036854775808, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295,"
    " 18446744073709551615, 12.5, X'00FF', 'q\"b\\\\s/n\\n', REPEAT('é', 300), 'ab',"
    " CONCAT('t', CHAR(9), CHAR(1), CHAR(31), CHAR(127), CHAR(8), CHAR(12), CHAR(13)), 'zoë 🚀 \u2028',"
    " 'é', 2155, '1970-01-01 00:00:01', '2038-01-19 03:14:07.9', '2001-02-03 04:05:06.789',"
    " '1999-12-31 23:59:59.000001', '9999-12-31 23:59:59', '1000-01-01 00:00:00.5',"
    " '2024-02-29 12:00:00.99', '2024-02-29 12:00:00.12345', '2000-01-01 00:00:00.000001', '9999-12-31')",
    "(9223372036854775807, 127, 0, 32767, 0, 8388607, 0, 2147483647, 0, 0, -1, X'', '', '', '', '', '', '',"
    " 1901, '0000-00-00 00:00:00', '0000-00-00 00:00:00', '2000-01-01 00:00:00.000',"
    " '2000-01-01 00:00:00.000010', '0000-00-00 00:00:00', '2000-00-00 00:00:00.0',"
    " '2000-01-00 10:00:00.01', '0001-01-01 00:00:00.00001', '2020-02-29 23:59:59.999999', '0000-00-00')",
    "(0" + ", NULL" * 28 + ")",
    "(-1, 0, 1, 0, 1, -1, 1, -1, 1, 1, 0, X'01', 'a', 'b', 'c', 'd', 'e', 'f', 2000,"
    " '2020-01-01 00:00:00', '2020-01-01 00:00:00.0', '2020-01-01 00:00:00.000',"
    " '2020-01-01 00:00:00.000000', '2020-01-01 00:00:00', '2020-01-01 00:00:00.0',"
    " '2020-01-01 00:00:00.00', '2020-01-01 00:00:00.00000', '2020-01-01 00:00:00.000000', '2000-00-00')",
] + [f"({n}, {n % 100}, 1, 2, 3, 4, 5, 6, 7, 8, 9, X'0A', 'v{n}', 'w', 'x', 'y', 'z', 'l', 1999,"
     f" '2021-03-04 05:06:{n % 60:02d}', NULL, NULL, NULL, '2021-03-04 05:06:07', NULL, NULL, NULL, NULL, NULL)"
     for n in range(1, 200)]


def test_the_compiled_row_walk_is_built() -> None:
    assert fastrows.available(), "make test builds invalidator/_rowwalk.c (pip install -e .): it is missing"
    assert fastrows.describe() == "compiled"


@pytest.fixture
def fr_table(stack: Stack, tmp_path: Path) -> Iterator[tuple[pymysql.connections.Connection, Path]]:
    conn = stack.mariadb.connect(database="cachelab", init_command="SET time_zone = '+00:00', sql_mode = ''")
    with conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS fr_types")
        cur.execute(f"CREATE TABLE fr_types ({COLUMNS}) CHARSET utf8mb4")
    config = tmp_path / "fr.toml"
    config.write_text(f"""
[entities.thing]
table = "fr_types"
route = "/thing/{{id}}"
key = ["id"]
columns = {SERVED!r}
ttl_s = 120
key_tag = "fr"
""".replace("'", '"'))
    yield conn, config
    with conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS fr_types")
    conn.close()


def write_everything(conn: pymysql.connections.Connection) -> None:
    with conn.cursor() as cur:
        cur.execute(f"INSERT INTO fr_types ({NAMES}) VALUES " + ", ".join(ROWS))  # multi-row events
        cur.execute("UPDATE fr_types SET vs = CONCAT(COALESCE(vs, ''), '.')")  # same keys
        cur.execute("UPDATE fr_types SET id = id + 1000 WHERE id BETWEEN 1 AND 150")  # keys change
        cur.execute("UPDATE fr_types SET ti = NULL, t0 = NULL, da = NULL, tx = NULL WHERE id > 1100")
        for n in range(1151, 1160):  # single-row events
            cur.execute("UPDATE fr_types SET mt = %s WHERE id = %s", (f"n°{n} \"\\", n))
        cur.execute("DELETE FROM fr_types WHERE id > 1120")
        cur.execute("DELETE FROM fr_types WHERE id = 0")


def packets(settings: InvalidatorSettings, begin: tuple[str, int], end: tuple[str, int],
            refresh: bool) -> tuple[list[RowsPacket], Followed, Weights]:
    followed, weights, claim = followed_tables(settings, refresh)
    stream = open_stream(settings, Position(*begin), tables=followed.catalog.tables, claim=claim)
    out = []
    try:
        for event in stream:
            if type(event) is RowsPacket:
                out.append(event)
            if isinstance(event, HeartbeatLogEvent) or (stream.log_file, stream.log_pos) >= end:
                break
    finally:
        stream.close()
    return out, followed, weights


def written_packets(stack: Stack, fr_table: tuple[pymysql.connections.Connection, Path],
                    refresh: bool) -> tuple[list[RowsPacket], Followed, Weights]:
    """The rows events of :func:`write_everything`, read by the connection."""
    conn, config = fr_table
    begin = master_position(conn)
    write_everything(conn)
    end = master_position(conn)
    settings = InvalidatorSettings.from_env({**stack.invalidator_env(), "CACHETAIL_CONFIG": str(config),
                                             "INVALIDATOR_HEARTBEAT_S": "0.5"})
    return packets(settings, begin, end, refresh)


@pytest.mark.parametrize("refresh", [False, True], ids=["delete", "refresh"])
def test_the_compiled_walk_records_what_the_python_path_records(
        stack: Stack, fr_table: tuple[pymysql.connections.Connection, Path], refresh: bool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    events, followed, weights = written_packets(stack, fr_table, refresh)
    handled = []
    compiled_apply = fastrows.apply

    def spy(*args: Any) -> bool:
        handled.append(compiled_apply(*args))
        return handled[-1]

    monkeypatch.setattr(fastrows, "apply", spy)
    ops: list[bytes] = []
    try:
        assert len(events) > 10
        for rows in events:
            ours, theirs = Batch(refresh), Batch(refresh)
            decode.add_packet(ours, rows, followed.rules, weights)
            monkeypatch.setattr(fastrows, "enabled", False)
            decode.add_packet(theirs, rows, followed.rules, weights)
            monkeypatch.setattr(fastrows, "enabled", True)
            assert list(ours.ops.items()) == list(theirs.ops.items()), rows.operation
            ops += ours.ops.values()
    finally:
        weights.close()
    assert handled and all(handled), "every event of this table is the compiled walk's"
    assert len(handled) == len(events)
    assert any(op.startswith(OP_SET) for op in ops) == refresh
    assert any(op == OP_DELETE for op in ops)


class GivesUpOnTheLastRow:
    """A compiled plan that is handed each event one byte short: it records the rows before
    the last one, then gives up (False), as on bytes it cannot read."""

    def __init__(self, plan: Any) -> None:
        self.plan = plan
        self.written: list[int] = []  # entries the compiled walk recorded, per event

    def apply(self, data: bytes, start: int, end: int, operation: int, ops: dict[str, bytes]) -> bool:
        done = self.plan.apply(data, start, end - 1, operation, ops)
        self.written.append(len(ops))
        return bool(done)


@pytest.mark.parametrize("refresh", [False, True], ids=["delete", "refresh"])
def test_a_walk_that_gives_up_midway_leaves_the_python_paths_batch(
        stack: Stack, fr_table: tuple[pymysql.connections.Connection, Path], refresh: bool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled walk's fallback through decode.add_packet: it writes some entries, gives
    up, and the Python path runs the whole event again over them; the batch is the one the
    Python path alone makes, entry for entry and in order."""
    events, followed, weights = written_packets(stack, fr_table, refresh)
    real_plan_for = fastrows.plan_for
    wrappers: list[GivesUpOnTheLastRow] = []

    def giving_up(table_map: Any, rules: Any, refresh_mode: bool) -> Any:
        found = real_plan_for(table_map, rules, refresh_mode)
        assert found is not None, "this table is the compiled walk's"
        wrappers.append(GivesUpOnTheLastRow(found))
        return wrappers[-1]

    try:
        for rows in events:
            theirs = Batch(refresh)
            monkeypatch.setattr(fastrows, "enabled", False)
            decode.add_packet(theirs, rows, followed.rules, weights)
            monkeypatch.setattr(fastrows, "enabled", True)
            ours = Batch(refresh)
            with monkeypatch.context() as patched:
                patched.setattr(fastrows, "plan_for", giving_up)
                decode.add_packet(ours, rows, followed.rules, weights)
            assert list(ours.ops.items()) == list(theirs.ops.items()), rows.operation
    finally:
        weights.close()
    written = [w.written[0] for w in wrappers]
    assert len(written) == len(events)
    assert any(n > 0 for n in written), "the compiled walk recorded entries before giving up"


# ------------------------------------------- hand-made events: what is handed back

def plan(refresh: bool = False) -> Any:
    """id INT (key), name VARCHAR(10) utf8, born DATE; refresh mode serves name and born."""
    from invalidator import _rowwalk as rw
    columns = ((4, 0, rw.INT, 0, False), (0, 1, rw.UTF8 if refresh else rw.SKIP, 0, False),
               (3, 0, rw.DATE if refresh else rw.SKIP, 0, False))
    served = ((1, b'"name":'), (2, b'"born":')) if refresh else ()
    return rw.Plan(columns, 0, "ct:{t:", "}", OP_DELETE, served, write_prefix(60) if refresh else None)


BORN = (1975 << 9 | 1 << 5 | 1).to_bytes(3, "little")  # 1975-01-01


def image(key: int | None, name: bytes | None = b"ab", born: bytes = BORN) -> bytes:
    nulls = (key is None) | (name is None) << 1
    out = bytes([nulls])
    if key is not None:
        out += key.to_bytes(4, "little", signed=True)
    if name is not None:
        out += bytes([len(name)]) + name
    return out + born


def test_hand_made_rows_are_read_as_the_server_writes_them() -> None:
    data = image(7) + image(-3, name=None)
    ops: dict[str, bytes] = {}
    assert plan().apply(data, 0, len(data), 2, ops) is True  # delete
    assert ops == {"ct:{t:7}": OP_DELETE, "ct:{t:-3}": OP_DELETE}
    ops = {}
    data = image(7) + image(8, name=b'\xc3\xa9"\n')  # an update that changes the key
    assert plan(refresh=True).apply(data, 0, len(data), 1, ops) is True
    written = Batch(True)
    written.delete("ct:{t:7}")
    written.write("ct:{t:8}", b'{"name":"\xc3\xa9\\"\\n","born":"1975-01-01"}', 60)  # what the Python path writes
    assert list(ops.items()) == list(written.ops.items())


@pytest.mark.parametrize("case", ["truncated", "trailing byte", "null key", "bad utf-8", "overlong utf-8",
                                  "surrogate", "impossible date", "bad operation"])
def test_what_the_compiled_walk_cannot_read_goes_back_to_the_python_path(case: str) -> None:
    good = image(1)
    data, op = {
        "truncated": (good[:-1], 0),
        "trailing byte": (good + b"\x00", 0),
        "null key": (image(None), 0),
        "bad utf-8": (image(2, name=b"\xff"), 0),
        "overlong utf-8": (image(2, name=b"\xc0\xaf"), 0),
        "surrogate": (image(2, name=b"\xed\xa0\x80"), 0),
        "impossible date": (image(2, born=(2023 << 9 | 2 << 5 | 30).to_bytes(3, "little")), 0),
        "bad operation": (good, 3),
    }[case]
    ops: dict[str, bytes] = {}
    assert plan(refresh=True).apply(data, 0, len(data), op, ops) is False
    assert list(ops) == (["ct:{t:1}"] if case == "trailing byte" else [])  # the rows before it only
    ops = {}
    assert plan(refresh=True).apply(good + data, 0, len(good + data), op, ops) is False
    assert list(ops) in ([], ["ct:{t:1}"])  # at most the rows before, as the Python path records them


def test_a_plan_refuses_a_shape_it_cannot_walk() -> None:
    from invalidator import _rowwalk as rw
    with pytest.raises(ValueError, match="size does not fit"):
        rw.Plan(((5, 0, rw.INT, 0, False),), 0, "a", "b", OP_DELETE, (), None)
    with pytest.raises(ValueError, match="key column must be an integer"):
        rw.Plan(((0, 1, rw.UTF8, 0, False), (4, 0, rw.INT, 0, False)), 0, "a", "b", OP_DELETE, (), None)
    with pytest.raises(ValueError, match="fixed size or a length prefix"):
        rw.Plan(((4, 1, rw.INT, 0, False),), 0, "a", "b", OP_DELETE, (), None)
    with pytest.raises(TypeError, match="write_prefix"):
        rw.Plan(((4, 0, rw.INT, 0, False),), 0, "a", "b", OP_DELETE, ((0, b'"id":'),), None)
