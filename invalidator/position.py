"""Where the worker resumes: the binlog position after the last applied transaction.

A position is ``(log_file, log_pos)`` at a transaction boundary (the end of an
XID event, a DDL statement or a rotate) plus the identity of the server it
belongs to (``@@server_id``, and ``@@server_uuid`` on MySQL), so a file and
offset are only ever used on that server, and the GTID state after the same
transaction, which names the point on any server with the same history (a
promoted replica): see :mod:`invalidator.gtid`.  ``gtid`` is None when the
state is unknown (a position saved before GTIDs were kept), never guessed.

Default store: **Redis** (``INVALIDATOR_POSITION_STORE=redis``), under
``<prefix>:{inv}:position``, written by the same fenced script as the
transaction's deletes (on a cluster: by a fenced script in its own slot, after
every slot acknowledged the deletes).  Why:

- Atomic with the work (one node): Redis holds either the deletes *and* the
  position or neither, so the position can never be ahead of what Redis
  acknowledged, even if the worker dies between a write and a file write.
- Fenced: the script that saves it checks the leader lease, so an old leader
  that wakes up after a standby took over cannot move it.
- It shares the cache's fate: if Redis loses data (a restart without
  persistence, a failover to a replica that missed the last writes), the
  position is lost or rolled back together with the deletes it describes and
  the worker replays or fully invalidates.  A position in a local file would
  stay ahead and leave stale values for their whole TTL.
- A standby on another host finds it.
- Its cost: a FLUSHDB or FLUSHALL (``/cache/clear`` keeps it) loses it, and the
  next start does a full invalidation of the (already empty) keyspace - which
  is correct anyway.

Alternative: ``INVALIDATOR_POSITION_STORE=file`` keeps ``position.json`` in
``INVALIDATOR_STATE_DIR`` (systemd's StateDirectory), written only after Redis
acknowledged the work: tmp file, fsync, rename, fsync of the directory.  It
serves one host only: a standby on another host would not find it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import redis

from cachetail.keyspace import Keyspace


@dataclass(frozen=True)
class Position:
    log_file: str
    log_pos: int
    source_id: int = 0  # @@server_id of the server this position belongs to
    gtid: str | None = None  # the GTID state after the same transaction; None: unknown
    source_uuid: str = ""  # @@server_uuid on MySQL

    def to_json(self) -> bytes:
        data: dict[str, object] = {"log_file": self.log_file, "log_pos": self.log_pos,
                                   "source_id": self.source_id, "gtid": self.gtid}
        if self.source_uuid:
            data["source_uuid"] = self.source_uuid
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> Position | None:
        try:
            data = json.loads(raw)
            gtid = data.get("gtid")
            return cls(str(data["log_file"]), int(data["log_pos"]), int(data.get("source_id", 0)),
                       None if gtid is None else str(gtid), str(data.get("source_uuid", "")))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    @property
    def source(self) -> tuple[int, str]:
        """The identity of the server whose file and offset these are."""
        return self.source_id, self.source_uuid

    @property
    def file_index(self) -> int:
        found = re.search(r"(\d+)$", self.log_file)
        return int(found.group(1)) if found else 0

    def __str__(self) -> str:
        return f"{self.log_file}:{self.log_pos}"


class PositionStore(Protocol):
    in_redis: bool  # True: the applier writes the position inside its fenced script

    def load(self) -> Position | None: ...

    def committed(self, position: Position) -> None:
        """Called once Redis acknowledged the pipeline."""


class RedisPositionStore:
    in_redis = True

    def __init__(self, client: redis.Redis | redis.RedisCluster, keyspace: Keyspace) -> None:
        self.client = client
        self.key = keyspace.invalidator_position()

    def load(self) -> Position | None:
        raw = self.client.get(self.key)
        return None if raw is None else Position.from_json(raw)

    def committed(self, position: Position) -> None:
        pass


class FilePositionStore:
    in_redis = False

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / "position.json"

    def load(self) -> Position | None:
        try:
            return Position.from_json(self.path.read_bytes())
        except FileNotFoundError:
            return None

    def committed(self, position: Position) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, position.to_json())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def make_store(kind: str, client: redis.Redis | redis.RedisCluster, keyspace: Keyspace,
               state_dir: Path) -> PositionStore:
    if kind == "file":
        return FilePositionStore(state_dir)
    return RedisPositionStore(client, keyspace)
