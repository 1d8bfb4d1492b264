"""What a failed connect or a broken binlog stream means, and what the worker does about it.

Every failure falls in one of three kinds:

- ``retry``: the connection (or the server) is away, or refuses us for a reason that
  time or an operator fixes (access denied, our server id in use).  The position is
  good; try it again after a growing backoff.
- ``resume_by_gtid``: the server cannot serve this *file and offset* (not its binlog,
  an offset inside an event or past the end, the file purged or never there).  Retrying
  the same offset can only fail again; the GTID state names the same point on any
  server that has it.
- ``full``: the server cannot serve our *GTID state* either (purged, or the server does
  not have our history: lost writes, errant transactions).  Keys cached from the old
  history may be stale in ways no binlog event will ever say: every owned key goes.

MySQL error 1236 (ER_MASTER_FATAL_ERROR_READING_BINLOG) carries the cause only in its
text; the texts below are MariaDB 10.x and MySQL 5.7/8.x (both "slave" and "replica"
wordings).  An unknown 1236 is treated as an unusable position: a GTID resume first, a
full invalidation if that fails too - never a loop on the same position.
"""

from __future__ import annotations

from dataclasses import dataclass

import pymysql

RETRY = "retry"
RESUME_BY_GTID = "resume_by_gtid"
FULL = "full"

BINLOG_FATAL = 1236
ACCESS = {1044, 1045, 1142, 1227, 1370, 1698}
CONNECTION = {1040, 1053, 1129, 1130, 1152, 1158, 1159, 1160, 1161, 1205, 1927}


class StreamLost(ConnectionError):
    """The binlog connection dropped (the library tried to reconnect on its own)."""


class ServerChanged(ConnectionError):
    """The stream connection reached another server than the one the worker planned for."""


@dataclass(frozen=True)
class Failure:
    action: str  # RETRY, RESUME_BY_GTID or FULL
    kind: str  # a bounded label: cachetail_invalidator_stream_errors_total{kind}
    message: str


# (substrings of the lowered 1236 text, kind, action) - first match wins
_BINLOG_FATAL: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("same server_uuid", "same server_id", "same server id"), "server_id_in_use", RETRY),
    (("could not find gtid state requested", "purged binary logs containing gtids",
      "purged binary logs containing gtid", "purged required binary logs"), "gtid_purged", FULL),
    (("not in the master's binlog", "not in the source's binlog", "is missing the gtid",
      "has more gtids than the master", "has more gtids than the source",
      "slave has diverged", "replica has diverged", "conflicts with the binary log"),
     "diverged", FULL),
    (("gtid_mode = off", "gtid_mode=off", "gtid-transaction when @@global.gtid_mode"),
     "gtid_unavailable", FULL),
    (("could not find first log file",), "file_missing", RESUME_BY_GTID),
    (("impossible position", "position > file size", "bogus data", "truncated in the middle",
      "wrong offset", "event header", "could not open log file", "binlog truncated",
      "error reading header", "corrupt", "checksum verification failed"),
     "bad_position", RESUME_BY_GTID),
    # read from inside an event, garbage looks like a huge length; a genuinely huge event
    # fails the GTID resume the same way and ends in a full invalidation: no loop either way
    (("exceeded max_allowed_packet",), "event_too_big", RESUME_BY_GTID),
    (("can not handle replication events with the checksum",
      "cannot handle replication events with the checksum"), "config", RETRY),
)


def classify(exc: BaseException) -> Failure:
    """The meaning of ``exc``, raised by a connect or while reading the binlog stream."""
    message = str(exc)
    if isinstance(exc, ServerChanged):
        return Failure(RETRY, "server_changed", message)
    if isinstance(exc, (StreamLost, OSError, EOFError)):
        return Failure(RETRY, "connection", message)
    if not isinstance(exc, pymysql.err.MySQLError):
        return Failure(RETRY, "unexpected", message)
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
    text = str(exc.args[1] if len(exc.args) > 1 else "")
    if code == BINLOG_FATAL:
        lowered = text.lower()
        for needles, kind, action in _BINLOG_FATAL:
            if any(n in lowered for n in needles):
                return Failure(action, kind, text)
        return Failure(RESUME_BY_GTID, "unknown_1236", text)
    if code in ACCESS:
        return Failure(RETRY, "access_denied", text)
    if code in CONNECTION or code >= 2000 or isinstance(exc, pymysql.err.InterfaceError):
        return Failure(RETRY, "connection", text or message)
    return Failure(RETRY, "server_error", text or message)


def is_connection_error(exc: BaseException) -> bool:
    return classify(exc).kind == "connection"
