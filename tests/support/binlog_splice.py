"""A TCP proxy in front of a MariaDB that rewrites transactions of the binlog stream it relays.

No MySQL 8 server can run here, so the events a MySQL 8 primary would send
(TRANSACTION_PAYLOAD_EVENT, PARTIAL_UPDATE_ROWS_EVENT) are built from the documented
layouts out of the events a real MariaDB sends for the same transaction, and put in
their place in a live stream.  Everything before the binlog dump request (handshake,
the library's queries) and every other connection (the worker's control connections)
pass through unchanged.  After the dump request the proxy parses the server's packets,
holds each transaction (GTID event to XID) until it is complete, hands it to
``rewrite`` and renumbers the packets it sends on (their sequence ids must follow each
other).  Tests only; it listens on 127.0.0.1.
"""

from __future__ import annotations

import socket
import threading
import zlib
from collections.abc import Callable
from contextlib import suppress

from cachetail.devstack import free_port

HEADER_LEN = 19
COM_BINLOG_DUMP = 0x12
XID_EVENT = 16
TABLE_MAP_EVENT = 19
UPDATE_ROWS_EVENT_V1 = 24
UPDATE_ROWS_EVENT_V2 = 31
MARIADB_GTID_EVENT = 162
MYSQL_GTID_EVENT = 33
FL_STANDALONE = 1  # MariaDB GTID event flags2: a transaction of one event (DDL)

Event = bytes  # an event packet's payload: 0x00, the 19-byte header, the body, the CRC32
Rewrite = Callable[[list[Event]], list[Event]]


def event_type(event: Event) -> int:
    return event[5]


def next_position(event: Event) -> int:
    return int.from_bytes(event[14:18], "little")


def build_event(code: int, body: bytes, like: Event) -> Event:
    """An event of type ``code`` with ``body``, the timestamp, server id and end position of
    ``like``, and a CRC32 (the server sends one: binlog_checksum=CRC32)."""
    size = HEADER_LEN + len(body) + 4
    header = (like[1:5] + bytes([code]) + like[6:10] + size.to_bytes(4, "little") + like[14:18]
              + (0).to_bytes(2, "little"))
    raw = header + body
    return b"\x00" + raw + zlib.crc32(raw).to_bytes(4, "little")


def net_length(value: int) -> bytes:
    """MySQL's length-encoded integer (net_store_length)."""
    if value < 251:
        return bytes([value])
    if value < 1 << 16:
        return b"\xfc" + value.to_bytes(2, "little")
    if value < 1 << 24:
        return b"\xfd" + value.to_bytes(3, "little")
    return b"\xfe" + value.to_bytes(8, "little")


def transaction_payload(events: list[Event]) -> list[Event]:
    """The GTID event, then one TRANSACTION_PAYLOAD_EVENT (40) holding the rest, as a MySQL
    8.0.20+ primary with binlog_transaction_compression=ON writes a transaction.

    Layout (MySQL's binary codec Transaction_payload): no post-header; fields as
    (type, length, value), each a length-encoded integer: payload size (1), compression
    type (2), uncompressed size (3); the end mark (0); then the payload.  The payload here
    is the enclosed events as the server sent them, with compression type NONE (255): a
    real server compresses them with zstd (type 0), which needs a library not installed
    here.  The header's end position is the last enclosed event's, so the positions of
    the events after it still add up."""
    inner = b"".join(e[1:] for e in events[1:])

    def field(kind: int, value: int) -> bytes:
        encoded = net_length(value)
        return net_length(kind) + net_length(len(encoded)) + encoded

    body = field(1, len(inner)) + field(2, 255) + field(3, len(inner)) + net_length(0) + inner
    return [events[0], build_event(40, body, events[-1])]


def partial_update(update: Event) -> Event:
    """The single-row UPDATE_ROWS_EVENT ``update`` as a PARTIAL_UPDATE_ROWS_EVENT (39), as a
    MySQL 8.0.3+ primary with binlog_row_value_options=PARTIAL_JSON writes an update.

    Layout (MySQL's rows_event.h; python-mysql-replication 1.0.17 reads it the same way):
    the v2 rows post-header (table id 6, flags 2, extra-data length 2 counting itself), the
    column count, the before and after column bitmaps, then per row the before image, the
    value options (a length-encoded integer; 0: no JSON column updated partially, so no
    partial bitmap follows) and the after image.  The row's before and after images must
    be of the same length (the caller updates a value to one of the same length): that is
    how the rows are split here without parsing the table's columns."""
    kind = event_type(update)
    assert kind in (UPDATE_ROWS_EVENT_V1, UPDATE_ROWS_EVENT_V2), kind
    body = update[1 + HEADER_LEN:-4]
    at = 8
    if kind == UPDATE_ROWS_EVENT_V2:
        at += int.from_bytes(body[at:at + 2], "little")
    count = body[at]
    assert count < 251
    width = (count + 7) // 8
    rows_at = at + 1 + 2 * width
    rows = body[rows_at:]
    assert len(rows) % 2 == 0, "before and after images of different lengths"
    half = len(rows) // 2
    new_body = (body[:8] + (2).to_bytes(2, "little") + body[at:rows_at]
                + rows[:half] + net_length(0) + rows[half:])
    return build_event(39, new_body, update)


def gtid_of(event: Event) -> bytes:
    return bytes(event[1 + HEADER_LEN:1 + HEADER_LEN + 12])  # MariaDB: sequence number, domain id


def maps_table(event: Event, table: bytes) -> bool:
    """A table map event of ``table`` (any schema)."""
    if event_type(event) != TABLE_MAP_EVENT:
        return False
    at = 1 + HEADER_LEN + 8
    at += event[at] + 2
    return bytes(event[at + 1:at + 1 + event[at]]) == table


class SpliceProxy:
    """``rewrite(transaction)`` is given each complete transaction of every binlog stream
    relayed (a list of event payloads, GTID event first) and returns what goes on instead."""

    def __init__(self, backend: tuple[str, int], rewrite: Rewrite) -> None:
        self.backend = backend
        self.rewrite = rewrite
        self.host = "127.0.0.1"
        self.port = free_port()
        self._listener = socket.create_server((self.host, self.port))
        self._open: list[socket.socket] = []
        self._closed = False
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name=f"splice-{self.port}", daemon=True).start()

    def close(self) -> None:
        self._closed = True
        with suppress(OSError):
            self._listener.close()
        with self._lock:
            victims, self._open = self._open, []
        for sock in victims:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
                server = socket.create_connection(self.backend)
            except OSError:
                return
            with self._lock:
                self._open += [client, server]
            dumping = threading.Event()
            threading.Thread(target=self._client_to_server, args=(client, server, dumping), daemon=True).start()
            threading.Thread(target=self._server_to_client, args=(server, client, dumping), daemon=True).start()

    @staticmethod
    def _client_to_server(client: socket.socket, server: socket.socket, dumping: threading.Event) -> None:
        buf = b""
        try:
            while data := client.recv(65536):
                buf += data
                while len(buf) >= 4 and len(buf) >= 4 + int.from_bytes(buf[:3], "little"):
                    size = int.from_bytes(buf[:3], "little")
                    if size and buf[4] == COM_BINLOG_DUMP:
                        dumping.set()  # before the server can answer it
                    buf = buf[4 + size:]
                server.sendall(data)
        except OSError:
            pass
        finally:
            with suppress(OSError):
                server.shutdown(socket.SHUT_WR)

    def _server_to_client(self, server: socket.socket, client: socket.socket, dumping: threading.Event) -> None:
        buf = b""
        seq: int | None = None
        held: list[Event] = []
        standalone = False
        try:
            while data := server.recv(65536):
                if not dumping.is_set():
                    client.sendall(data)
                    continue
                buf += data
                out: list[bytes] = []
                while len(buf) >= 4 and len(buf) >= 4 + int.from_bytes(buf[:3], "little"):
                    size = int.from_bytes(buf[:3], "little")
                    if seq is None:
                        seq = buf[3]
                    payload, buf = buf[4:4 + size], buf[4 + size:]
                    if payload[:1] != b"\x00" or len(payload) <= HEADER_LEN:
                        out.append(payload)
                        continue
                    kind = event_type(payload)
                    if kind in (MARIADB_GTID_EVENT, MYSQL_GTID_EVENT):
                        held = [payload]
                        standalone = kind == MARIADB_GTID_EVENT and bool(payload[1 + HEADER_LEN + 12] & FL_STANDALONE)
                        continue
                    if not held:
                        out.append(payload)
                        continue
                    held.append(payload)
                    if kind == XID_EVENT or standalone:
                        out += self.rewrite(held)
                        held = []
                for payload in out:
                    assert seq is not None and len(payload) < 0xFFFFFF
                    client.sendall(len(payload).to_bytes(3, "little") + bytes([seq]) + payload)
                    seq = (seq + 1) % 256
        except OSError:
            pass
        finally:
            with suppress(OSError):
                client.shutdown(socket.SHUT_WR)
