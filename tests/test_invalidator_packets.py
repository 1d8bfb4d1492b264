"""The binlog connection (invalidator/packets.py) beside python-mysql-replication 1.0.17.

It answers the library's ``_read_packet`` from a buffer, drops other tables' events and
reads followed tables' rows events itself.  These tests tell when upstream changes what
that rests on (the pinned versions, the calls the library makes) and check that what
the worker makes of a range of binlog is the same, key for key and byte for byte, as
what it makes of the library's own decode of every row.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import pymysql
import pytest
from pymysqlreplication.event import HeartbeatLogEvent, XidEvent
from pymysqlreplication.row_event import RowsEvent, UpdateRowsEvent, WriteRowsEvent

from cachetail.codec import prepare_binlog_event
from invalidator import decode
from invalidator.apply import OP_SET, Batch
from invalidator.packets import WANTED, BinlogConnection, RowsPacket
from invalidator.position import Position
from invalidator.rules import TableRules
from invalidator.settings import InvalidatorSettings
from invalidator.stream import Stream, open_stream
from support.binlog import followed_tables
from support.invalidator import master_position
from support.stack import Stack

Ops = dict[str, bytes]


def test_the_pinned_versions_and_the_hooks_the_connection_overrides() -> None:
    assert version("mysql-replication") == "1.0.17", "packets.py and rowparse.py follow 1.0.17: re-check them"
    for name in ("_read_packet", "_write_bytes", "_force_close", "query"):
        assert callable(getattr(pymysql.connections.Connection, name)), name
    # the library reads every stream packet through the connection's _read_packet
    import inspect

    from pymysqlreplication import binlogstream

    source = inspect.getsource(binlogstream.BinLogStreamReader.fetchone)
    assert "self._stream_connection._read_packet()" in source
    assert "@master_binlog_checksum" in inspect.getsource(binlogstream.BinLogStreamReader)
    # the event types passed on are those of the classes the worker asks for (stream.ONLY_EVENTS)
    from pymysqlreplication.packet import BinLogPacketWrapper

    from invalidator.stream import ONLY_EVENTS

    event_map = BinLogPacketWrapper._BinLogPacketWrapper__event_map
    asked = {code for code, cls in event_map.items() if cls in ONLY_EVENTS}
    assert asked <= WANTED
    assert {event_map[code].__name__ for code in WANTED - asked} == {"TableMapEvent", "FormatDescriptionEvent"}


def library_ops(event: RowsEvent, rules: dict[str, TableRules], batch: Batch, query: Any) -> None:
    """What the worker did before this connection existed: the library decodes every row."""
    table = rules.get(event.table)
    if table is None:
        return
    prepare_binlog_event(event)
    for row in event.rows:
        if isinstance(event, UpdateRowsEvent):
            table.apply(batch, row["before_values"], row["after_values"], query, row["after_none_sources"])
        elif isinstance(event, WriteRowsEvent):
            table.apply(batch, None, row["values"], query, row["none_sources"])
        else:
            table.apply(batch, row["values"], None, query)


def transactions(settings: InvalidatorSettings, begin: tuple[str, int], end: tuple[str, int], refresh: bool,
                 ours: bool) -> tuple[list[Ops], Stream]:
    """The batch of each transaction in [begin, end): our path, or the library's decode."""
    followed, weights, claim = followed_tables(settings, refresh)
    stream = open_stream(settings, Position(*begin), tables=followed.catalog.tables,
                         claim=claim if ours else None)
    out: list[Ops] = []
    batch = Batch(refresh)
    try:
        for event in stream:
            if type(event) is RowsPacket:
                decode.add_packet(batch, event, followed.rules, weights)
            elif isinstance(event, RowsEvent):
                if ours:
                    decode.add_rows(batch, event, followed.rules, weights)
                else:
                    library_ops(event, followed.rules, batch, weights)
            elif isinstance(event, XidEvent):
                out.append(dict(batch.ops))
                batch = Batch(refresh)
            if isinstance(event, HeartbeatLogEvent) or (stream.log_file, stream.log_pos) >= end:
                break
    finally:
        stream.close()
        weights.close()
    return out, stream


def write_a_bit_of_everything(conn: pymysql.connections.Connection) -> None:
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS pk_other LIKE users")
        cur.execute("INSERT IGNORE INTO pk_other SELECT * FROM users WHERE id <= 500")
        cur.execute("UPDATE users SET full_name = CONCAT(full_name, '+') WHERE id BETWEEN 1 AND 300")
        for i in range(1, 40):  # single-row events, each with its table map
            cur.execute("UPDATE users SET email = CONCAT('x', email) WHERE id = %s", (i,))
            cur.execute("UPDATE pk_other SET email = CONCAT('x', email) WHERE id = %s", (i,))
        cur.execute("UPDATE pk_other SET full_name = CONCAT(full_name, '+') WHERE id BETWEEN 1 AND 500")
        cur.execute("INSERT INTO users (id, username, email, full_name) VALUES (30001, 'pk1', 'e', 'Zoë 🚀'),"
                    " (30002, 'pk2', 'e', 'N')")
        cur.execute("UPDATE users SET id = 30003 WHERE id = 30002")
        cur.execute("DELETE FROM users WHERE id IN (30001, 30003)")
        cur.execute("UPDATE products SET stock = stock + 1 WHERE id <= 20")
        cur.execute("UPDATE products SET category = 'books' WHERE id = 3")
        cur.execute("DROP TABLE pk_other")


@pytest.mark.parametrize("refresh", [False, True], ids=["delete", "refresh"])
def test_the_worker_makes_the_same_keys_and_bytes_as_from_the_library_decode(
        stack: Stack, db, refresh: bool) -> None:
    begin = master_position(db)
    write_a_bit_of_everything(db)
    end = master_position(db)
    settings = InvalidatorSettings.from_env({**stack.invalidator_env(), "INVALIDATOR_HEARTBEAT_S": "0.5"})
    theirs, _ = transactions(settings, begin, end, refresh, ours=False)
    ours, stream = transactions(settings, begin, end, refresh, ours=True)
    assert sum(len(t) for t in theirs) > 300
    assert ours == theirs
    assert stream.filter.dropped > 80  # pk_other's maps and rows, repeated users maps, other events
    values = [op for t in ours for op in t.values() if op.startswith(OP_SET)]
    assert bool(values) == refresh


def test_no_checksum_and_an_event_of_several_packets(mariadb_factory, stack: Stack) -> None:
    """binlog_checksum=NONE (no CRC32 after each event), and a 17 MiB row (a packet of 16 MiB - 1
    and the rest): our reader joins it as pymysql does, and reads it itself."""
    server = mariadb_factory(["--binlog-checksum=NONE", "--max-allowed-packet=64M"])
    conn = server.connect(database="cachelab")
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE big (id INT PRIMARY KEY, body LONGBLOB)")
        begin = master_position(conn)
        cur.execute("INSERT INTO big VALUES (1, REPEAT('x', 17 * 1024 * 1024)), (2, 'y')")
        cur.execute("UPDATE big SET body = 'z' WHERE id = 2")
        end = master_position(conn)
    conn.close()
    settings = InvalidatorSettings.from_env({**stack.invalidator_env(), "DB_PORT": str(server.port),
                                             "INVALIDATOR_HEARTBEAT_S": "0.5"})
    claimed: list[RowsPacket] = []
    stream = open_stream(settings, Position(*begin), tables=("big",), claim=lambda table_map: True)
    try:
        for event in stream:
            if type(event) is RowsPacket:
                claimed.append(event)
            if isinstance(event, HeartbeatLogEvent) or (stream.log_file, stream.log_pos) >= end:
                break
        assert not stream.filter.checksum
    finally:
        stream.close()
    rows = []
    for packet in claimed:
        found = decode._usable(packet.table_map, frozenset({"id", "body"}), True)
        assert found is not None
        rows += decode._rows(found, True, packet.operation, packet.data, packet.start, packet.end)
    assert [(b and b["id"], a and a["id"], a and len(a["body"])) for b, a, _ in rows] == [
        (None, 1, 17 * 1024 * 1024), (None, 2, 1), (2, 2, 1)]


def test_binlog_already_here_is_pending(stack: Stack, db) -> None:
    settings = InvalidatorSettings.from_env({**stack.invalidator_env(), "INVALIDATOR_HEARTBEAT_S": "0.5"})
    begin = master_position(db)
    with db.cursor() as cur:
        for i in range(1, 200):
            cur.execute("UPDATE users SET email = CONCAT('p', email) WHERE id = %s", (i,))
    stream = open_stream(settings, Position(*begin), tables=("users",))
    seen: Callable[[], bool] = stream.pending
    try:
        events = iter(stream)
        next(events)
        assert seen(), "199 transactions were written before the stream started"
        while not isinstance(next(events), HeartbeatLogEvent):
            pass
        assert not seen()
        opened = stream._opened[-1]
        assert isinstance(opened, BinlogConnection) and opened._streaming
    finally:
        stream.close()
