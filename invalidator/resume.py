"""Where to start following on the server behind the address, decided on each connect.

- The server the position belongs to: its file and offset (exact and cheap).
- Another server (a promoted replica after a failover), or a file and offset the
  server just refused: the GTID state saved with the position, which names the same
  point on any server with the same history.
- No GTID state known, GTIDs off on the server, or a server that lacks transactions
  the worker already applied: no start can be trusted.  Keys may hold values the new
  server never had; a full invalidation of the owned keys follows, never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pymysql

from invalidator.checks import recheck_binlog
from invalidator.gtid import MARIADB, MYSQL, covers, missing_domains
from invalidator.position import Position
from invalidator.source import Source, identify


@dataclass(frozen=True)
class Plan:
    source: Source  # the server the stream must reach
    position: Position  # the start (its GTID state filled in where the server knows it)
    by_gtid: bool


class FullInvalidationNeeded(Exception):
    def __init__(self, reason: str, why: str) -> None:
        self.reason = reason  # a label of cachetail_invalidator_full_invalidations_total
        super().__init__(why)


def binlog_gtid_pos(conn: pymysql.connections.Connection, position: Position) -> str | None:
    """MariaDB: the GTID state at a file and offset of this server (None if it cannot tell)."""
    with conn.cursor() as cur:
        cur.execute("SELECT BINLOG_GTID_POS(%s, %s)", (position.log_file, position.log_pos))
        row = cur.fetchone()
    return None if row is None or row[0] is None else str(row[0])


def plan_resume(conn: pymysql.connections.Connection, position: Position, offset_refused: bool,
                checked: set[tuple[int, str]]) -> Plan:
    """How to follow from ``position`` on the server at the other end of ``conn``.

    ``offset_refused``: this server refused the position's file and offset last time.
    ``checked``: identities whose binlog settings were checked; a new server is checked
    (ROW, FULL, FULL, nothing compressed or partial: checks.binlog_problems) before it is
    followed, raising CheckFailed with a line per problem if it cannot be."""
    source = identify(conn)
    if source.identity not in checked:
        recheck_binlog(conn)
        checked.add(source.identity)
    same = position.source == source.identity
    if same and position.gtid is None and source.flavor == MARIADB:
        position = replace(position, gtid=binlog_gtid_pos(conn, position))
    if same and not offset_refused:
        return Plan(source, position, False)
    where = "its file and offset were refused" if same else f"the address now leads to {source}"
    if position.gtid is None:
        raise FullInvalidationNeeded(
            "bad_position" if same else "source_changed",
            f"{where}, and no GTID state is known for {position} (server_id {position.source_id})")
    if source.gtid_pos is None:
        raise FullInvalidationNeeded("gtid_unavailable", f"{where}, and {source} has gtid_mode OFF")
    if source.flavor == MARIADB:
        missing = missing_domains(position.gtid, source.gtid_pos)
        if missing:
            raise FullInvalidationNeeded(
                "diverged", f"{where}, and it lacks transactions already applied: {', '.join(missing)}"
                f" (its binlog ends at {source.gtid_pos or 'nothing'})")
    elif source.flavor == MYSQL and (not position.gtid or not covers(MYSQL, source.gtid_pos, position.gtid)):
        raise FullInvalidationNeeded(
            "diverged" if position.gtid else "gtid_unavailable",
            f"{where}, and its gtid_executed does not contain {position.gtid or 'an empty set'}")
    return Plan(source, position, True)
