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
  library needs to decode them);
- table maps of tables it does not follow (read from the event body: table id, schema,
  table) and the rows events of their table ids.

What it passes on is the packet pymysql would have returned, byte for byte; error and
EOF packets and multi-packet events (>= 16 MiB) too.  Before the dump request (the
library's set-up queries) it is plain pymysql.  ``tests/test_invalidator_packets.py``
tells when the library or pymysql stop calling it as assumed here.
"""

from __future__ import annotations

import errno
import select
from collections.abc import Collection
from typing import Any

import pymysql
from pymysql.constants import CR
from pymysql.protocol import MysqlPacket
from pymysqlreplication.constants import BINLOG

CHUNK = 256 * 1024
MAX_PACKET_LEN = 0xFFFFFF
COM_BINLOG_DUMP = 0x12
COM_BINLOG_DUMP_GTID = 0x1E
ROWS_EVENTS = frozenset({
    BINLOG.WRITE_ROWS_EVENT_V1, BINLOG.UPDATE_ROWS_EVENT_V1, BINLOG.DELETE_ROWS_EVENT_V1,
    BINLOG.WRITE_ROWS_EVENT_V2, BINLOG.UPDATE_ROWS_EVENT_V2, BINLOG.DELETE_ROWS_EVENT_V2,
    BINLOG.PARTIAL_UPDATE_ROWS_EVENT,
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


def is_dump_request(data: bytes) -> bool:
    """A COM_BINLOG_DUMP(_GTID) command as pymysql writes it: 4-byte header, then the command."""
    return len(data) > 4 and data[4] in (COM_BINLOG_DUMP, COM_BINLOG_DUMP_GTID)


class Filter:
    """Which tables' events go on: (schema, table) names, and the table ids seen mapped to them."""

    def __init__(self, schemas: Collection[str], tables: Collection[str]) -> None:
        self.schemas = frozenset(s.encode() for s in schemas)
        self.tables = frozenset(t.encode() for t in tables)
        self.table_ids: set[bytes] = set()  # raw 6-byte ids of followed tables' maps
        self.dropped = 0  # packets dropped (for tests and metrics)

    def keeps(self, payload: bytes | memoryview, start: int) -> bool:
        """Whether the event packet at ``payload[start:]`` goes on to the library."""
        kind = payload[start + TYPE_AT]
        if kind in ROWS_EVENTS:
            at = start + BODY_AT
            return bytes(payload[at:at + TABLE_ID_LEN]) in self.table_ids
        if kind == BINLOG.TABLE_MAP_EVENT:
            return self._table_map(payload, start)
        if kind == BINLOG.ROTATE_EVENT and payload[start + TIMESTAMP_AT:start + TYPE_AT] != b"\0\0\0\0":
            self.table_ids.clear()  # as the library forgets its table maps at a real rotate
        return kind in WANTED

    def _table_map(self, payload: bytes | memoryview, start: int) -> bool:
        at = start + BODY_AT
        table_id = bytes(payload[at:at + TABLE_ID_LEN])
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


class BinlogConnection(pymysql.connections.Connection):  # type: ignore[misc]
    """A pymysql connection whose binlog stream is read in chunks and filtered by ``binlog_filter``."""

    binlog_filter: Filter | None = None

    def __init__(self, *args: Any, binlog_filter: Filter | None = None, **kwargs: Any) -> None:
        self.binlog_filter = binlog_filter
        self._streaming = False
        self._buf = b""
        self._at = 0
        super().__init__(*args, **kwargs)

    # --------------------------------------------------------------- pymysql hooks

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
                if not keep.keeps(payload, start):
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
