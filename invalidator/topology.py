"""Notice that Redis may have lost acknowledged writes, and say since when.

Redis replicates asynchronously.  A DEL the old primary acknowledged but had
not yet sent to its replica is gone once that replica is promoted, and the
value it deleted is back.  The same happens behind one endpoint (ElastiCache
Multi-AZ promoting a replica) and when a server restarts from a snapshot older
than its last writes.  The invalidator closes that hole by replaying the
binlog from a point every replica had already reached.

Every ``interval_s`` this watch asks the cluster for its slot map (CLUSTER
SLOTS) — a single node counts as one primary serving every slot, known by its
``run_id`` — and each primary for its replication offsets (INFO replication).  At
poll time ``t`` it notes the primary's ``master_repl_offset``; once every
online replica's acknowledged offset has reached it, every write the primary
acknowledged before ``t`` is on every replica: the primary is *safe until t*.
When a slot range's primary changes, the worker is told to replay from the
oldest "safe until" of the replaced primaries.  A replaced primary never seen
in sync gives ``None``: replay cannot be bounded, so the worker invalidates
everything.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import redis

from cachetail.settings import RedisSettings

log = logging.getLogger("invalidator")
Address = tuple[str, int]


class FailoverWatch:
    def __init__(self, settings: RedisSettings, on_failover: Callable[[float | None, str], None],
                 interval_s: float = 0.5) -> None:
        self.settings = settings
        self.on_failover = on_failover
        self.interval_s = interval_s
        self.started = time.monotonic()
        self.view: dict[tuple[int, int], str] | None = None  # slot range -> primary id
        self.safe_until: dict[str, float] = {}  # primary id -> monotonic time
        self._offsets: dict[str, deque[tuple[float, int]]] = {}
        self._known: list[Address] = [(settings.host, settings.port)]
        self._clients: dict[Address, redis.Redis] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="failover-watch", daemon=True)

    def start(self) -> FailoverWatch:
        self.poll()  # the first view, before the worker applies anything
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for client in self._clients.values():
            client.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - the watch must outlive any odd reply
                log.exception("cluster failover watch: poll failed")

    def poll(self) -> None:
        slots = self._slots()
        if slots is None:
            return
        view = {(lo, hi): node for lo, hi, node, _ in slots}
        for node, address in {node: address for _, _, node, address in slots}.items():
            self._sample(node, address)
        if self.view is not None:
            replaced = {old for rng, old in self.view.items() if _primary_of(view, rng[0]) != old}
            if replaced:
                safe = [self.safe_until.get(node) for node in replaced]
                since = None if None in safe else min(s for s in safe if s is not None)
                log.error("Redis primary %s replaced (failover or restart); writes acknowledged"
                          " after it was last seen in sync may be lost", ", ".join(sorted(replaced)))
                self.on_failover(since, "failover")
        self.view = view

    def _slots(self) -> list[tuple[int, int, str, Address]] | None:
        if not self.settings.cluster:  # one server: a new run_id is a new server
            address = self._known[0]
            try:
                run_id = self._client(address).info("server")["run_id"]
            except (redis.RedisError, OSError, KeyError):
                return None
            return [(0, 16383, _text(run_id), address)]
        for address in list(self._known):
            try:
                reply = self._client(address).execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
            except (redis.RedisError, OSError):
                continue
            slots: list[tuple[int, int, str, Address]] = []
            for entry in reply:
                lo, hi, primary = int(entry[0]), int(entry[1]), entry[2]
                slots.append((lo, hi, _text(primary[2]), (_text(primary[0]), int(primary[1]))))
                for node in entry[2:]:
                    found = (_text(node[0]), int(node[1]))
                    if found not in self._known:
                        self._known.append(found)
            return slots
        return None

    def _sample(self, node: str, address: Address) -> None:
        asked = time.monotonic()
        try:
            info = self._client(address).info("replication")
        except (redis.RedisError, OSError):
            return
        history = self._offsets.setdefault(node, deque(maxlen=64))
        history.append((asked, int(info.get("master_repl_offset", 0))))
        replicas = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
        online = [int(r.get("offset", 0)) for r in replicas if r.get("state") == "online"]
        if not online:
            return  # nothing is in sync: this primary's safe point stays where it was
        reached = min(online)
        while history and history[0][1] <= reached:
            self.safe_until[node] = history.popleft()[0]

    def _client(self, address: Address) -> redis.Redis:
        client = self._clients.get(address)
        if client is None:
            kwargs: dict[str, Any] = {**self.settings.client_kwargs(), "host": address[0],
                                      "port": address[1], "ssl": self.settings.tls,
                                      "socket_timeout": 0.5, "socket_connect_timeout": 0.5}
            client = self._clients[address] = redis.Redis(**kwargs)
        return client


def _primary_of(view: dict[tuple[int, int], str], slot: int) -> str | None:
    for (lo, hi), node in view.items():
        if lo <= slot <= hi:
            return node
    return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
