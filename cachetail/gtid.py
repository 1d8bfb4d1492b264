"""GTID states, as both processes read and compare them.

A GTID state names a point in the database's history on every server that shares it:

- MariaDB: the last GTID of each replication domain, ``domain-server-seq`` joined by
  commas (``0-1-105,1-2-7``), the form of ``@@gtid_binlog_pos``, ``@@last_gtid`` and
  ``MASTER_GTID_WAIT``.  Only the sequence number orders transactions of a domain.
- MySQL: a GTID set, ``uuid:interval[:interval...]`` joined by commas
  (``3e11fa47-71ca-11e1-9e33-c80aa9429562:1-105:107``), the form of ``@@gtid_executed``
  and ``WAIT_FOR_EXECUTED_GTID_SET``; MySQL 8.3's tags (``uuid:tag:1-5``) included.

:class:`GtidState` is the parsed, comparable form.  Parsing is strict: a client's
``Cachetail-Min-GTID`` header goes through it, and a malformed one is a 400, never a
guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cachetail.patterns import anchored, matches

MARIADB = "mariadb"
MYSQL = "mysql"
FLAVORS = (MARIADB, MYSQL)

_U32 = 2**32 - 1
_U64 = 2**64 - 1
_MARIADB_GTID = re.compile(r"(\d{1,10})-(\d{1,10})-(\d{1,20})")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_INTERVAL = re.compile(r"(\d{1,19})(?:-(\d{1,19}))?")
_ANY_INTERVAL = re.compile(r"([0-9]+)(?:-([0-9]+))?")
_TAG = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]{0,31}")
MAX_TEXT = 4096  # a state longer than this is refused (a header, a Redis value)


def _state_pattern(one: str) -> str:
    # one GTID, or several separated by commas; blanks around the whole (HTTP may strip them)
    return anchored(f"[ \t]*{one}(?:,{one})*[ \t]*")


# What a client may send as Cachetail-Min-GTID (the document declares the same pattern).
# Numbers of any size: a domain, server or sequence no server has is simply never applied.
# MariaDB: domain-server-sequence.  MySQL: uuid, then intervals (and MySQL 8.3's tags).
MARIADB_PATTERN = _state_pattern("[0-9]+-[0-9]+-[0-9]+")
MYSQL_PATTERN = _state_pattern("[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
                               "(?::(?:[a-zA-Z_][a-zA-Z0-9_]{0,31}|[0-9]+(?:-[0-9]+)?))+")
PATTERNS = {MARIADB: MARIADB_PATTERN, MYSQL: MYSQL_PATTERN}


def parse_wanted(flavor: str, text: str) -> GtidState:
    """A client's state (Cachetail-Min-GTID): exactly what ``PATTERNS[flavor]`` admits; a
    domain given twice counts with its highest sequence, an interval given backwards as the
    same interval, a number no server can have as a transaction never applied."""
    if len(text) > MAX_TEXT or not matches(PATTERNS[flavor], text):
        raise GtidError("does not match " + ("domain-server-sequence[,...]" if flavor == MARIADB else
                                             "uuid:number[-number][,...]"))
    if flavor == MYSQL:
        return _parse_mysql(text, lenient=True)
    merged: dict[int, tuple[int, int]] = {}
    for part in text.strip(" \t").split(","):
        domain, server, seq = (int(x) for x in part.split("-"))
        if domain not in merged or merged[domain][1] < seq:
            merged[domain] = (server, seq)
    return GtidState(MARIADB, domains=tuple(sorted(merged.items())))


class GtidError(ValueError):
    """A GTID or GTID state that does not parse."""


Intervals = tuple[tuple[int, int], ...]  # sorted, disjoint, not adjacent; inclusive


@dataclass(frozen=True)
class GtidState:
    """A parsed state.  MariaDB: ``domains`` maps domain -> (server_id, seq).  MySQL:
    ``sets`` maps (uuid, tag) -> the intervals of transaction numbers executed."""

    flavor: str
    domains: tuple[tuple[int, tuple[int, int]], ...] = ()
    sets: tuple[tuple[tuple[str, str], Intervals], ...] = ()

    @property
    def empty(self) -> bool:
        return not self.domains and not self.sets

    def covers(self, need: GtidState) -> bool:
        """Every transaction of ``need`` is in this state (a domain or uuid this state has
        never seen is not covered)."""
        if need.flavor != self.flavor:
            return False
        if self.flavor == MARIADB:
            mine = dict(self.domains)
            return all(d in mine and mine[d][1] >= seq for d, (_, seq) in need.domains)
        have = dict(self.sets)
        return all(_within(intervals, have.get(source, ())) for source, intervals in need.sets)

    def merge(self, other: GtidState) -> GtidState:
        """The smallest state that covers both."""
        if other.flavor != self.flavor:
            raise GtidError(f"cannot merge a {other.flavor} state into a {self.flavor} one")
        if self.flavor == MARIADB:
            merged = dict(self.domains)
            for d, (server, seq) in other.domains:
                if d not in merged or merged[d][1] < seq:
                    merged[d] = (server, seq)
            return GtidState(MARIADB, domains=tuple(sorted(merged.items())))
        sets = dict(self.sets)
        for source, intervals in other.sets:
            sets[source] = _union(sets.get(source, ()) + intervals)
        return GtidState(MYSQL, sets=tuple(sorted(sets.items())))

    def __str__(self) -> str:
        if self.flavor == MARIADB:
            return ",".join(f"{d}-{s}-{n}" for d, (s, n) in self.domains)
        parts = []
        for uuid in sorted({u for (u, _), _ in self.sets}):
            text = uuid
            for (u, tag), intervals in self.sets:
                if u != uuid:
                    continue
                text += (f":{tag}" if tag else "") + "".join(
                    f":{lo}" if lo == hi else f":{lo}-{hi}" for lo, hi in intervals)
            parts.append(text)
        return ",".join(parts)


EMPTY_MARIADB = GtidState(MARIADB)
EMPTY_MYSQL = GtidState(MYSQL)


def parse(flavor: str, text: str) -> GtidState:
    """``text`` as a state of ``flavor``; GtidError names what is wrong."""
    if len(text) > MAX_TEXT:
        raise GtidError(f"longer than {MAX_TEXT} characters")
    if flavor == MARIADB:
        return GtidState(MARIADB, domains=tuple(sorted(parse_mariadb(text).items())))
    if flavor == MYSQL:
        return _parse_mysql(text)
    raise GtidError(f"unknown flavor {flavor!r}")


def parse_mariadb(state: str) -> dict[int, tuple[int, int]]:
    """``0-1-105,1-2-7`` -> {domain: (server_id, seq)}; one GTID per domain at most."""
    out: dict[int, tuple[int, int]] = {}
    for part in state.replace(" ", "").split(","):
        if not part:
            continue
        found = _MARIADB_GTID.fullmatch(part)
        if found is None:
            raise GtidError(f"not a MariaDB GTID (domain-server-sequence): {part[:60]!r}")
        domain, server, seq = (int(x) for x in found.groups())
        if domain > _U32 or server > _U32 or seq > _U64:
            raise GtidError(f"out of range: {part!r}")
        if domain in out:
            raise GtidError(f"domain {domain} given twice")
        out[domain] = (server, seq)
    return out


def format_mariadb(state: dict[int, tuple[int, int]]) -> str:
    return ",".join(f"{d}-{s}-{n}" for d, (s, n) in sorted(state.items()))


def _parse_mysql(text: str, lenient: bool = False) -> GtidState:
    sets: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for part in text.replace(" ", "").replace("\n", "").split(","):
        if not part:
            continue
        fields = part.split(":")
        if not _UUID.fullmatch(fields[0]) or len(fields) < 2:
            raise GtidError(f"not a MySQL GTID (uuid:number[-number]...): {part[:60]!r}")
        uuid, tag = fields[0].lower(), ""
        for field in fields[1:]:
            interval = (_ANY_INTERVAL if lenient else _INTERVAL).fullmatch(field)
            if interval is not None:
                lo = int(interval.group(1))
                hi = int(interval.group(2) or lo)
                if lenient:
                    lo, hi = min(lo, hi), max(lo, hi)
                elif not 1 <= lo <= hi < 2**63:
                    raise GtidError(f"not an interval of transaction numbers: {field!r}")
                sets.setdefault((uuid, tag), []).append((lo, hi))
            elif _TAG.fullmatch(field):
                tag = field.lower()
            else:
                raise GtidError(f"not a MySQL GTID (uuid:number[-number]...): {part[:60]!r}")
    return GtidState(MYSQL, sets=tuple(sorted((k, _union(tuple(v))) for k, v in sets.items())))


def _union(intervals: Intervals | tuple[tuple[int, int], ...]) -> Intervals:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(intervals):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return tuple(out)


def _within(need: Intervals, have: Intervals) -> bool:
    return all(any(lo >= a and hi <= b for a, b in have) for lo, hi in need)


def covers(flavor: str, have: str, need: str) -> bool:
    """True when state ``have`` holds every transaction of state ``need``."""
    return parse(flavor, have).covers(parse(flavor, need))


def missing_domains(have: str, server: str) -> list[str]:
    """MariaDB: the GTIDs of ``have`` that the server's ``@@gtid_binlog_pos`` cannot contain.

    A domain the server never logged, or a sequence number it has not reached, means it
    lacks transactions the worker applied: the server does not have our history.  (A
    domain the server has with a higher sequence number is checked by the server itself,
    in strict mode, when we ask for it.)
    """
    theirs = parse_mariadb(server)
    return [f"{d}-{s}-{n}" for d, (s, n) in parse_mariadb(have).items()
            if d not in theirs or theirs[d][1] < n]
