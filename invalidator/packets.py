"""The binlog connection: pymysql's, with the event stream read in large chunks and filtered.

python-mysql-replication 1.0.17 asks its stream connection for one packet at a time
(``_read_packet``), and pymysql reads each with two small buffered reads (header, body)
and wraps it in a ``MysqlPacket``; the library then unpacks the event header, builds the
event object and only then looks at the table.  Most of the binlog of a busy server is
other tables' changes, so :class:`BinlogConnection`, the connection our
``pymysql_wrapper`` gives the library, answers ``_read_packet`` once the dump request
is sent (:func:`is_dump_request`) from a buffer filled by reads of up to ``CHUNK`` bytes,
and drops before anything is built:

- events of a type the worker does not follow (``WANTED`` holds the codes of the library
  classes in ``stream.ONLY_EVENTS``, and the table maps and format descriptions the
  library needs to decode them), when the type is known to carry no change: any other
  (a compressed transaction, a partial JSON update, MariaDB's compressed events, an
  unknown type) raises :class:`~invalidator.unsupported.UnsupportedEvent` instead;
- table maps of tables it does not follow (read from the event body: table id, schema,
  table) and the rows events of their table ids;
- a followed table's map whose table id it already passed since the last rotate: with
  ``freeze_schema`` (which :func:`invalidator.stream.open_stream` sets) the library
  ignores such a repeat, and a server gives a changed table a new id.

What it passes on is the packet pymysql would have returned, byte for byte; error and
EOF packets and multi-packet events (>= 16 MiB) too.  Before the dump request (the
library's set-up queries) it is plain pymysql.

A rows event of a followed table whose images the worker reads from the bytes itself
(``Filter.claim``: :mod:`invalidator.rowparse` has parsers for its table map, the one the
library parsed and keeps in its ``table_map``) is not handed to the library either: its
header is read here into a :class:`RowsPacket`, kept in ``Filter.rows`` until the library
returns its next event, and :class:`invalidator.stream.Stream` yields it first, so the
worker sees every event in binlog order without the library building the event.  ``tests/test_invalidator_packets.py``
tells when the library or pymysql stop calling it as assumed here.
"""

from __future__ import annotations

import errno
import select
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import pymysql
from pymysql.constants import CR
from pymysql.protocol import MysqlPacket
from pymysqlreplication.constants import BINLOG

from invalidator.unsupported import refuse

CHUNK = 256 * 1024
MAX_PACKET_LEN = 0xFFFFFF
COM_BINLOG_DUMP = 0x12
COM_BINLOG_DUMP_GTID = 0x1E
# the rows events the worker follows (stream.ONLY_EVENTS has no PartialUpdateRowsEvent)
ROWS_EVENTS = frozenset({
    BINLOG.WRITE_ROWS_EVENT_V1, BINLOG.UPDATE_ROWS_EVENT_V1, BINLOG.DELETE_ROWS_EVENT_V1,
    BINLOG.WRITE_ROWS_EVENT_V2, BINLOG.UPDATE_ROWS_EVENT_V2, BINLOG.DELETE_ROWS_EVENT_V2,
})
WANTED = frozenset(ROWS_EVENTS | {
    BINLOG.TABLE_MAP_EVENT, BINLOG.FORMAT_DESCRIPTION_EVENT, BINLOG.ROTATE_EVENT,
    BINLOG.XID_EVENT, BINLOG.QUERY_EVENT, BINLOG.HEARTBEAT_LOG_EVENT,
    BINLOG.MARIADB_GTID_EVENT, BINLOG.GTID_LOG_EVENT,
})
# offsets in a packet's payload: 0x00, then the 19-byte event header, then the body
TYPE_AT = 5
TIMESTAMP_AT = 1
BODY_AT = 20
TABLE_ID_LEN = 6  # post-header: table id, 6 bytes since MySQL 5.1.4 / all MariaDB


UPDATE_EVENTS = frozenset({BINLOG.UPDATE_ROWS_EVENT_V1, BINLOG.UPDATE_ROWS_EVENT_V2})
V2_EVENTS = frozenset({BINLOG.WRITE_ROWS_EVENT_V2, BINLOG.UPDATE_ROWS_EVENT_V2, BINLOG.DELETE_ROWS_EVENT_V2})
OPERATIONS = {BINLOG.WRITE_ROWS_EVENT_V1: "insert", BINLOG.WRITE_ROWS_EVENT_V2: "insert",
              BINLOG.UPDATE_ROWS_EVENT_V1: "update", BINLOG.UPDATE_ROWS_EVENT_V2: "update",
              BINLOG.DELETE_ROWS_EVENT_V1: "delete", BINLOG.DELETE_ROWS_EVENT_V2: "delete"}
CHECKSUM_LEN = 4


class BadRowsEvent(ValueError):
    """A rows event whose bytes do not add up (a change of the protocol or of the library)."""


@dataclass(frozen=True, slots=True)
class RowsPacket:
    """A rows event of a followed table, its header read: the rows are ``data[start:end]``."""

    operation: str  # insert, update, delete
    table: str
    table_map: Any  # the library's Table for the event's table id
    present: bytes  # columns-present bitmap (of the after image for an insert)
    present2: bytes | None  # of the after image of an update
    data: bytes
    start: int
    end: int


def read_rows_header(payload: bytes, start: int, end: int, table_map: Any) -> RowsPacket:
    """The rows event at ``payload[start:end]`` (0x00, event header, body, no checksum)."""
    kind = payload[start + TYPE_AT]
    at = start + BODY_AT + TABLE_ID_LEN + 2  # table id, flags
    if kind in V2_EVENTS:
        at += int.from_bytes(payload[at:at + 2], "little")  # extra data, its length included
    first = payload[at]
    if first < 251:
        count, at = first, at + 1
    elif first in (252, 253, 254):
        n = {252: 2, 253: 3, 254: 8}[first]
        count, at = int.from_bytes(payload[at + 1:at + 1 + n], "little"), at + 1 + n
    else:
        raise BadRowsEvent(f"column count starts with {first:#x}")
    if count != len(table_map.columns):
        raise BadRowsEvent(f"{count} columns, the table map has {len(table_map.columns)}")
    width = (count + 7) // 8
    present, at = payload[at:at + width], at + width
    present2 = None
    if kind in UPDATE_EVENTS:
        present2, at = payload[at:at + width], at + width
    if at > end:
        raise BadRowsEvent("the header runs past the event")
    return RowsPacket(OPERATIONS[kind], table_map.table, table_map, present, present2, payload, at, end)


def is_dump_request(data: bytes) -> bool:
    """A COM_BINLOG_DUMP(_GTID) command as pymysql writes it: 4-byte header, then the command."""
    return len(data) > 4 and data[4] in (COM_BINLOG_DUMP, COM_BINLOG_DUMP_GTID)


Claim = Callable[[Any], bool]  # a table map (the library's Table) -> its rows are read here


class Filter:
    """Which tables' events go on: (schema, table) names, and the table ids seen mapped to them;
    which followed tables' rows events are read here (``claim``), and those read so far."""

    def __init__(self, schemas: Collection[str], tables: Collection[str], claim: Claim | None = None) -> None:
        self.schemas = frozenset(s.encode() for s in schemas)
        self.tables = frozenset(t.encode() for t in tables)
        self.table_ids: set[bytes] = set()  # raw 6-byte ids of followed tables' maps
        self.claim = claim
        self.table_maps: Callable[[], dict[int, Any]] = dict  # the library's table_map, once known
        self.checksum = False  # events end with a CRC32 (the library asked for it)
        self.rows: list[RowsPacket] = []
        self.dropped = 0  # packets dropped (for tests and metrics)

    def keeps(self, payload: bytes, start: int, end: int = 0) -> bool:
        """Whether the event packet at ``payload[start:end]`` goes on to the library."""
        kind = payload[start + TYPE_AT]
        if kind in ROWS_EVENTS:
            at = start + BODY_AT
            table_id = payload[at:at + TABLE_ID_LEN]
            if table_id not in self.table_ids:
                return False
            if self.claim is not None:
                table_map = self.table_maps().get(int.from_bytes(table_id, "little"))
                if table_map is not None and self.claim(table_map):
                    last = end - CHECKSUM_LEN if self.checksum else end
                    self.rows.append(read_rows_header(payload, start, last, table_map))
                    return False
            return True
        if kind == BINLOG.TABLE_MAP_EVENT:
            return self._table_map(payload, start)
        if kind == BINLOG.ROTATE_EVENT and payload[start + TIMESTAMP_AT:start + TYPE_AT] != b"\0\0\0\0":
            self.table_ids.clear()  # as the library forgets its table maps at a real rotate
        if kind in WANTED:
            return True
        stop = refuse(payload, start)
        if stop is not None:  # it may carry changes: never dropped (invalidator/unsupported.py)
            raise stop
        return False

    def take(self) -> list[RowsPacket]:
        rows, self.rows = self.rows, []
        return rows

    def _table_map(self, payload: bytes, start: int) -> bool:
        at = start + BODY_AT
        table_id = bytes(payload[at:at + TABLE_ID_LEN])
        if table_id in self.table_ids:
            return False  # the library has it, and ignores a repeat under freeze_schema
        at += TABLE_ID_LEN + 2  # flags
        n = payload[at]
        schema = bytes(payload[at + 1:at + 1 + n])
        at += n + 2  # length, name, NUL
        m = payload[at]
        table = bytes(payload[at + 1:at + 1 + m])
        if schema in self.schemas and table in self.tables:
            self.table_ids.add(table_id)
            return True
        self.table_ids.discard(table_id)  # an id may be reused by another table
        return False


class BinlogConnection(pymysql.connections.Connection):  # type: ignore[misc]  # pymysql ships no types: the base class is Any
    """A pymysql connection whose binlog stream is read in chunks and filtered by ``binlog_filter``."""

    binlog_filter: Filter | None = None
    _next_seq_id: int  # pymysql's, declared for the type checker
    _current_timeout: float | None
    _read_timeout: float | None

    def __init__(self, *args: Any, binlog_filter: Filter | None = None, **kwargs: Any) -> None:
        self.binlog_filter = binlog_filter
        self._streaming = False
        self._buf = b""
        self._at = 0
        super().__init__(*args, **kwargs)

    # --------------------------------------------------------------- pymysql hooks

    def query(self, sql: Any, unbuffered: bool = False) -> int:
        if self.binlog_filter is not None and "@master_binlog_checksum" in str(sql):
            self.binlog_filter.checksum = True  # the library saw the server's binlog_checksum on
        result: int = super().query(sql, unbuffered)
        return result

    def _write_bytes(self, data: bytes) -> None:
        super()._write_bytes(data)
        if is_dump_request(data):
            self._streaming = True

    def _read_packet(self, packet_type: type = MysqlPacket) -> Any:
        if not self._streaming:
            return super()._read_packet(packet_type)
        keep = self.binlog_filter
        while True:
            payload, start, end = self._next_payload()
            if keep is not None and payload[start] == 0 and end - start > BODY_AT:
                if not keep.keeps(payload, start, end):
                    keep.dropped += 1
                    continue
            packet = packet_type(payload[start:end], self.encoding)
            if packet.is_error_packet():
                packet.raise_for_error()
            return packet

    def pending(self) -> bool:
        """Binlog data already here (buffered, or waiting on the socket): the worker is behind."""
        if len(self._buf) - self._at >= 4:
            return True
        sock = self._sock
        if sock is None:
            return False
        try:
            return bool(select.select([sock], [], [], 0)[0])
        except (OSError, ValueError):
            return False

    # ------------------------------------------------------------------- reading

    def _next_payload(self) -> tuple[bytes, int, int]:
        """The next packet's payload (joined when split at 16 MiB), as (buffer, start, end)."""
        parts: list[bytes] = []
        while True:
            self._fill(4)
            buf, at = self._buf, self._at
            size = buf[at] | buf[at + 1] << 8 | buf[at + 2] << 16
            seq = buf[at + 3]
            if seq != self._next_seq_id:
                self._force_close()
                if seq == 0:  # MariaDB sends an error packet with sequence 0 when shutting down
                    raise pymysql.err.OperationalError(CR.CR_SERVER_LOST,
                                                       "Lost connection to MySQL server during query")
                raise pymysql.err.InternalError(
                    f"Packet sequence number wrong - got {seq} expected {self._next_seq_id}")
            self._next_seq_id = (seq + 1) % 256
            self._fill(4 + size)
            buf, at = self._buf, self._at
            self._at = at + 4 + size
            if size < MAX_PACKET_LEN and not parts:
                return buf, at + 4, at + 4 + size
            parts.append(buf[at + 4:at + 4 + size])
            if size < MAX_PACKET_LEN:
                joined = b"".join(parts)
                return joined, 0, len(joined)

    def _fill(self, need: int) -> None:
        """At least ``need`` bytes buffered from ``_at`` on."""
        have = len(self._buf) - self._at
        if have >= need:
            return
        chunks = [self._buf[self._at:]]
        if self._current_timeout != self._read_timeout:
            self._sock.settimeout(self._read_timeout)
            self._current_timeout = self._read_timeout
        while have < need:
            chunk = self._recv(max(CHUNK, need - have))
            chunks.append(chunk)
            have += len(chunk)
        self._buf = b"".join(chunks)
        self._at = 0

    def _recv(self, size: int) -> bytes:
        rfile = self._rfile
        if rfile is None:
            raise pymysql.err.InterfaceError(0, "")
        while True:
            try:
                # read1: what pymysql's reader already buffered first, then one recv
                data: bytes = rfile.read1(size)
                break
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                self._force_close()
                raise pymysql.err.OperationalError(
                    CR.CR_SERVER_LOST, f"Lost connection to MySQL server during query ({exc})") from exc
            except BaseException:
                self._force_close()
                raise
        if not data:
            self._force_close()
            raise pymysql.err.OperationalError(CR.CR_SERVER_LOST, "Lost connection to MySQL server during query")
        return data
