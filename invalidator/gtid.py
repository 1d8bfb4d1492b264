"""GTID bookkeeping: where in the database's history the worker is, on any server.

A binlog file and offset name a point on one server only; a GTID state names
it on every server that has the same history.  The worker keeps the state after
each transaction it applied and saves it with the position.

- MariaDB: a state is the last GTID per replication domain, ``domain-server-seq``
  joined by commas (``0-1-105,1-2-7``), the form of ``@@gtid_binlog_pos`` and
  ``@slave_connect_state``.
- MySQL: a state is the executed GTID set (``uuid:1-105,uuid2:1-7``), the form of
  ``@@gtid_executed``; kept with python-mysql-replication's ``GtidSet``.
"""

from __future__ import annotations

from typing import Protocol

from pymysqlreplication.gtid import Gtid, GtidSet

from cachetail.gtid import (
    MARIADB, MYSQL, GtidError, covers, format_mariadb, missing_domains, parse_mariadb,
)

__all__ = ["MARIADB", "MYSQL", "GtidError", "MariaDBTracker", "MySQLTracker", "Tracker", "covers",
           "missing_domains", "tracker"]  # the worker's modules import cachetail.gtid's names from here


class Tracker(Protocol):
    state: str  # after the last committed transaction

    def add(self, gtid: str) -> None:
        """A transaction with this GTID began; it counts once it commits (see ``commit``)."""

    def commit(self) -> str:
        """The state after the pending transaction (the state unchanged if there was none)."""


class _Pending:
    """The GTID of the transaction under way, counted once it commits."""

    def __init__(self) -> None:
        self.pending: str | None = None

    def add(self, gtid: str) -> None:
        self.pending = gtid

    def taken(self) -> str | None:
        gtid, self.pending = self.pending, None
        return gtid


class MariaDBTracker(_Pending):
    """The last GTID per domain; a single-domain state is kept as the GTID's own string."""

    def __init__(self, state: str) -> None:
        super().__init__()
        self.domains = parse_mariadb(state)
        self.state = format_mariadb(self.domains)

    def commit(self) -> str:
        gtid = self.taken()
        if gtid is None:
            return self.state
        domain, server, seq = (int(x) for x in gtid.split("-"))
        if len(self.domains) <= 1 and (not self.domains or domain in self.domains):
            self.domains = {domain: (server, seq)}
            self.state = gtid
        else:
            self.domains[domain] = (server, seq)
            self.state = format_mariadb(self.domains)
        return self.state


class MySQLTracker(_Pending):
    """The executed GTID set, grown by each committed transaction's GTID."""

    def __init__(self, state: str) -> None:
        super().__init__()
        try:
            self.executed = GtidSet(state or None)
        except (ValueError, AttributeError, IndexError) as exc:
            raise GtidError(f"not a MySQL GTID set: {state!r} ({exc})") from None
        self.state = str(self.executed)

    def commit(self) -> str:
        gtid = self.taken()
        if gtid is not None:
            one = Gtid(gtid)
            if not any(one in have for have in self.executed.gtids):  # a re-read is no error
                self.executed = self.executed + one
                self.state = str(self.executed)
        return self.state


def tracker(flavor: str, state: str) -> Tracker:
    return MySQLTracker(state) if flavor == MYSQL else MariaDBTracker(state)
