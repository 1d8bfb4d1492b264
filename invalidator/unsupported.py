"""Binlog events that may carry changes the worker cannot read: named, never dropped.

The binlog connection (:mod:`invalidator.packets`) drops the events the worker does not
follow by their type code, before anything decodes them.  Dropping is safe only for a
type known to carry no row change.  Every other type stops following, with the setting
that makes the server write something the worker can read:

- MySQL 8.0.20+ ``binlog_transaction_compression=ON``: each transaction's events inside
  one zstd-compressed TRANSACTION_PAYLOAD_EVENT (40).
- MySQL 8.0.3+ ``binlog_row_value_options=PARTIAL_JSON``: updates as
  PARTIAL_UPDATE_ROWS_EVENT (39), JSON columns as diffs, not images.
- MariaDB 10.2.3+ ``log_bin_compress=ON``: rows and statements longer than
  ``log_bin_compress_min_len`` as QUERY_COMPRESSED_EVENT (165) and
  WRITE/UPDATE/DELETE_ROWS_COMPRESSED_EVENT(_V1) (166-171); python-mysql-replication
  1.0.17 knows none of them.
- INCIDENT_EVENT (26): the server says changes may be missing from its binlog.
- Statement-format LOAD DATA (a session not in ROW format) and MySQL 5.1's pre-GA rows.
- A type this module does not know, unless its header marks it ignorable
  (LOG_EVENT_IGNORABLE_F, the flag a MySQL or MariaDB replica honours the same way).

The codes and names are those of MySQL 8.4's ``binlog_event.h`` and MariaDB 10.11's
``log_event.h``.
"""

from __future__ import annotations

from invalidator.checks import WHERE

# offsets in a packet's payload: 0x00, then the 19-byte event header (timestamp, type,
# server_id, size, next position, flags)
TYPE_AT = 5
NEXT_POSITION_AT = 14
FLAGS_AT = 18
IGNORABLE_FLAG = 0x80  # LOG_EVENT_IGNORABLE_F

_COMPRESSION = f"log_bin_compress is ON: set log_bin_compress=OFF {WHERE}"
_STATEMENT = (f"a session wrote it with binlog_format other than ROW: set binlog_format=ROW {WHERE},"
              " and keep sessions from changing it")
_PRE_GA = "rows events of MySQL 5.1.0-5.1.15: follow a MySQL >= 8.0.14 or MariaDB >= 10.5 server"

# type code -> (name, what to set on the server)
UNSUPPORTED: dict[int, tuple[str, str]] = {
    **{code: (name, _STATEMENT) for code, name in (
        (6, "LOAD_EVENT"), (8, "CREATE_FILE_EVENT"), (9, "APPEND_BLOCK_EVENT"), (10, "EXEC_LOAD_EVENT"),
        (11, "DELETE_FILE_EVENT"), (12, "NEW_LOAD_EVENT"), (17, "BEGIN_LOAD_QUERY_EVENT"),
        (18, "EXECUTE_LOAD_QUERY_EVENT"))},
    **{code: (name, _PRE_GA) for code, name in (
        (20, "PRE_GA_WRITE_ROWS_EVENT"), (21, "PRE_GA_UPDATE_ROWS_EVENT"), (22, "PRE_GA_DELETE_ROWS_EVENT"))},
    26: ("INCIDENT_EVENT", "the server wrote an incident: changes may be missing from its binlog"
         " (its error log says why); nothing to set"),
    39: ("PARTIAL_UPDATE_ROWS_EVENT", "binlog_row_value_options is PARTIAL_JSON (globally or in the"
         f" writing session): set binlog_row_value_options='' {WHERE}"),
    40: ("TRANSACTION_PAYLOAD_EVENT", "binlog_transaction_compression is ON (globally or in the"
         f" writing session): set binlog_transaction_compression=OFF {WHERE}"),
    **{code: (name, _COMPRESSION) for code, name in (
        (165, "QUERY_COMPRESSED_EVENT"), (166, "WRITE_ROWS_COMPRESSED_EVENT_V1"),
        (167, "UPDATE_ROWS_COMPRESSED_EVENT_V1"), (168, "DELETE_ROWS_COMPRESSED_EVENT_V1"),
        (169, "WRITE_ROWS_COMPRESSED_EVENT"), (170, "UPDATE_ROWS_COMPRESSED_EVENT"),
        (171, "DELETE_ROWS_COMPRESSED_EVENT"))},
}
UNKNOWN = "unknown"  # the metric's label for a type code not named here

# Types that carry no row change in a ROW-format binlog, among those the worker does not
# follow (packets.WANTED: rows, table maps, format descriptions, rotates, XIDs, queries,
# heartbeats, GTIDs): dropped unread.  START_V3, STOP, INTVAR, SLAVE, RAND, USER_VAR
# (statement context, or obsolete); IGNORABLE, ROWS_QUERY, ANONYMOUS_GTID, PREVIOUS_GTIDS,
# TRANSACTION_CONTEXT, VIEW_CHANGE, XA_PREPARE, HEARTBEAT_V2, GTID_TAGGED (MySQL);
# ANNOTATE_ROWS, BINLOG_CHECKPOINT, GTID_LIST, START_ENCRYPTION (MariaDB).
NO_CHANGES = frozenset({0, 1, 3, 5, 7, 13, 14, 28, 29, 34, 35, 36, 37, 38, 41, 42, 160, 161, 163, 164})
NAMES = tuple(name for name, _ in UNSUPPORTED.values()) + (UNKNOWN,)


class UnsupportedEvent(Exception):
    """An event the worker cannot read and must not drop: following stops before it."""

    def __init__(self, code: int, name: str, advice: str, next_position: int) -> None:
        self.code = code
        self.name = name  # a bounded label: UNSUPPORTED's names, or UNKNOWN
        self.advice = advice
        self.next_position = next_position  # the offset after the event, from its header
        super().__init__(f"{name} (type {code}) cannot be followed: {advice}")


def refuse(payload: bytes, start: int) -> UnsupportedEvent | None:
    """The event at ``payload[start:]`` (0x00, header, body) of a type the worker does not
    follow: None when it can be dropped, else what stops following."""
    code = payload[start + TYPE_AT]
    if code in NO_CHANGES:
        return None
    at = start + NEXT_POSITION_AT
    next_position = int.from_bytes(payload[at:at + 4], "little")
    if code in UNSUPPORTED:
        name, advice = UNSUPPORTED[code]
        return UnsupportedEvent(code, name, advice, next_position)
    if payload[start + FLAGS_AT] & IGNORABLE_FLAG:
        return None
    return UnsupportedEvent(code, UNKNOWN, f"type {code} is unknown to this version of cachetail and not"
                            " marked ignorable: it may carry changes; upgrade cachetail", next_position)
