"""The near-cache's invalidation connections on a Redis Cluster: one per primary.

Each primary announces changes of its own keys only, so the near-cache's promise
("every change of a key I hold will be announced") needs a tracking connection
(``CLIENT TRACKING on BCAST PREFIX``, as on one node: :mod:`api.tracking`) on
every primary that may hold a user key — every primary serving slots, and every
healthy one serving none yet, which is where a slot migration may take them.

The near-cache is live only while that set is tracked, and only for the
topology it was established against.  Any sign that the topology changed
empties and bypasses it at once: a tracking connection lost or silent (a
primary killed, cut off, restarted), a MOVED or ASK on the hot-read path (a
slot migrating or migrated, a failover the read found first), or a periodic
``CLUSTER SHARDS`` on a tracking connection that disagrees (a failover whose
old primary stays up, a node added or removed).  Then the slot map is read
again, every primary in it is tracked, and each of them is asked for its own
view: only when all agree with the map, with tracking on before their answer,
is the near-cache enabled again.

Per node, the rule that a reply crossing its invalidation is never kept holds as
on one node: a key lives on one primary, whose tracking connection delivers its
invalidations; a reply that arrives through a redirection was sent after the
near-cache was disabled, so its ticket is void.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from redis.exceptions import RedisError

from api.clusterlean import ClusterLean
from api.clustermap import Primary, Topology, parse_shards
from api.lean import RespConnection, open_connection, pack
from api.nearcache import NearCache
from api.trackerbase import HEARTBEAT_S, TrackerBase

log = logging.getLogger("api")

TOPOLOGY_CHECK_S = 1.0  # each tracked primary in turn is asked for its view this often
_PING = pack("PING")
_SHARDS = pack("CLUSTER", "SHARDS")


class TopologyChanging(Exception):
    """The topology changed while tracking was being established."""


class ClusterTracker(TrackerBase[Topology]):
    _establishing = "tracking on every primary"
    _retried = (RedisError, OSError, TopologyChanging)

    def __init__(self, lean: ClusterLean, prefix: str | Sequence[str], near: NearCache, *,
                 heartbeat_s: float = HEARTBEAT_S, check_s: float = TOPOLOGY_CHECK_S,
                 name: str = "cachetail-api-tracking") -> None:
        super().__init__(prefix, near, heartbeat_s=heartbeat_s, name=name)
        self._lean = lean
        # Heartbeats between two topology checks (a test may raise it to keep the check
        # out of an interleaving it forces).
        self.check_every = max(1, round(check_s / heartbeat_s))
        self._conns: dict[Primary, RespConnection] = {}
        self._changed = asyncio.Event()
        # A test seam: awaited before each attempt to establish tracking, with the
        # near-cache disabled (a test holds it there to change keys unannounced).
        self.before_establish: Callable[[], Awaitable[None]] | None = None
        lean.on_redirect = self._on_redirect

    @property
    def tracked(self) -> list[Primary]:
        return [p for p, conn in self._conns.items() if conn.is_open]

    async def sync(self) -> None:
        """Return once every invalidation any primary sent before now has been applied."""
        pings = [conn.call(_PING) for conn in self._conns.values() if conn.is_open]
        await asyncio.gather(*pings, return_exceptions=True)

    def _close_connections(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()

    # ---------------------------------------------------- establish and watch

    async def _establish(self) -> Topology:
        if self.before_establish is not None:
            await self.before_establish()
        self._changed.clear()
        topology = await self._lean.refresh()
        wanted = set(topology.primaries)
        for primary in [p for p, conn in self._conns.items() if p not in wanted or not conn.is_open]:
            self._conns.pop(primary).close()
        missing = [p for p in topology.primaries if p not in self._conns]
        opened = await asyncio.gather(*(self._open(p) for p in missing), return_exceptions=True)
        failed = None
        for primary, conn in zip(missing, opened, strict=True):
            if isinstance(conn, BaseException):
                failed = failed or conn
            else:
                self._conns[primary] = conn
        if failed is not None:
            raise failed
        views = await asyncio.gather(*(conn.call(_SHARDS) for conn in self._conns.values()))
        for view in views:
            if parse_shards(view, "").shape() != topology.shape():
                raise TopologyChanging("the primaries do not agree on the slot map yet")
        if self._changed.is_set() or not topology.covered:
            raise TopologyChanging("a primary was lost or a redirection seen meanwhile"
                                   if self._changed.is_set() else "some slots are not served")
        self._near.enable()
        log.info("near-cache on: %d primaries track %r for this worker (BCAST)",
                 len(topology.primaries), self.prefix)
        return topology

    async def _open(self, primary: Primary) -> RespConnection:
        return await open_connection(
            self._lean.primary_settings(primary), name=self._name, resp3=True,
            on_push=self._on_push, on_lost=lambda error: self._on_lost(primary, error),
            setup=(self._tracking,))

    async def _watch(self, topology: Topology) -> None:
        await self._heartbeats(topology)
        if self._near.live:  # an error reply ended the watch: nothing disabled it yet
            self._topology_changed("a tracking connection answered with an error")

    async def _heartbeats(self, topology: Topology) -> None:
        """Heartbeats on every tracking connection, and now and then one primary's view of
        the topology; returns when anything changed (the near-cache is then disabled)."""
        turn = 0
        while True:
            try:
                await asyncio.wait_for(self._changed.wait(), self._heartbeat_s)
                return
            except TimeoutError:
                pass
            conns = list(self._conns.values())
            turn += 1
            checked = None
            if turn % self.check_every == 0:
                checked = conns[(turn // self.check_every) % len(conns)].call(_SHARDS)
            try:
                await asyncio.gather(*(conn.call(_PING) for conn in conns))
                view = None if checked is None else await checked
            except RedisError:
                return  # the loss has disabled the near-cache
            if view is not None and parse_shards(view, "").shape() != topology.shape():
                self._topology_changed("a primary reports another slot map")
                return

    # ------------------------------------------------------------ events

    def _on_lost(self, primary: Primary, error: BaseException) -> None:
        if self._closing or primary not in self._conns:
            return  # closed by us: that primary is no longer tracked
        self._changed.set()
        self._lost(error, f"invalidation connection to {primary.host}:{primary.port}")

    def _on_redirect(self, kind: str, host: str, port: int) -> None:
        self._topology_changed(f"{kind.upper()} to {host}:{port}")

    def _topology_changed(self, what: str) -> None:
        self._changed.set()
        if self._near.live:
            self._near.disable("topology")
            self._log.warning("near-cache emptied and bypassed: the cluster's topology changed"
                              " (%s); tracking every primary again", what)
