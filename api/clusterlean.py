"""The lean path on a Redis Cluster: one pipelined connection per primary, routed by slot.

The same connection as on a single node (:mod:`api.lean`), one per primary, and
one slot map per worker.  A key's slot is the CRC16 of its hash tag; its
primary's connection carries the command, pipelined with every other caller's.

The map is read at start and again whenever it may be wrong: after a MOVED
(the slot is also pointed at its new primary at once, so the retry needs no
round trip more), after a connection to a primary failed or timed out (it may
have been failed over), and when the near-cache's tracking asks.  An ASK is
followed with ASKING on the importing node and changes nothing.  A command
follows at most ``_MAX_REDIRECTS`` redirections; every failure is redis-py's own
exception (``ResponseError`` for MOVED, ASK, TRYAGAIN and CLUSTERDOWN), so the
guard and its breaker treat this path as they treat redis-py's cluster client.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.crc import key_slot
from redis.exceptions import ClusterDownError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from api.clustermap import Primary, Topology, parse_shards, parse_slots
from api.lean import LeanRedis, RespConnection, pack
from cachetail.settings import RedisSettings
from metrics.api import REDIS_REDIRECTS, REDIS_TOPOLOGY_LOADS

log = logging.getLogger("api")

# Told of every redirection before the command is sent again: kind ("moved" or
# "ask"), and the node it points to.
RedirectHandler = Callable[[str, str, int], None]

_MAX_REDIRECTS = 3
_REFRESH_MIN_S = 0.1  # after a connection failure: no more often than this
_GET = b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n"
_PTTL = b"*2\r\n$4\r\nPTTL\r\n$%d\r\n%s\r\n"
_ASKING = pack("ASKING")
_SHARDS = pack("CLUSTER", "SHARDS")
_SLOTS = pack("CLUSTER", "SLOTS")
_FAILOVER_ERRORS = (RedisConnectionError, RedisTimeoutError)


class ClusterLean:
    """Hot reads (GET, GET+PTTL, one-slot MGET) on a Redis Cluster, for one worker."""

    def __init__(self, settings: RedisSettings, name: str = "cachetail-api") -> None:
        self._settings = settings
        self._name = name
        self._nodes: dict[tuple[str, int], LeanRedis] = {}
        self._retired: list[LeanRedis] = []
        self._by_slot: list[LeanRedis | None] | None = None
        self._loading: asyncio.Future[Topology] | None = None
        self._loaded_at = float("-inf")
        self._closed = False
        self.topology: Topology | None = None
        self.on_redirect: RedirectHandler | None = None

    # ------------------------------------------------------------- reads

    async def _call(self, key: str, payload: bytes | None = None) -> Any:
        """One command (by default GET ``key``) on the primary of ``key``'s slot, MOVED and
        ASK followed."""
        raw = key.encode()
        if payload is None:
            payload = _GET % (len(raw), raw)
        try:
            conn = self._ready(raw) or await self._connection(raw)
            return await conn.call(payload)
        except ResponseError as exc:
            return (await self._redirected(exc, (payload,)))[0]
        except _FAILOVER_ERRORS:
            self.refresh_soon()
            raise

    get = _call  # the hot read: a GET with no call layer of its own

    async def get_with_pttl(self, key: str) -> tuple[bytes | None, int]:
        """GET and PTTL written together (see :meth:`api.lean.LeanRedis.get_with_pttl`)."""
        raw = key.encode()
        get, pttl = _GET % (len(raw), raw), _PTTL % (len(raw), raw)
        try:
            conn = self._ready(raw) or await self._connection(raw)
            value, ttl = conn.call2(get + pttl)
            try:
                return await value, await ttl
            except ResponseError:
                _retrieve(ttl)
                raise
        except ResponseError as exc:
            value, ttl = await self._redirected(exc, (get, pttl))
            return value, ttl
        except _FAILOVER_ERRORS:
            self.refresh_soon()
            raise

    def mget(self, *keys: str) -> Awaitable[list[bytes | None]]:
        """MGET of keys of one slot (the caller's hash tags see to it)."""
        return self._call(keys[0], pack("MGET", *keys))

    def command(self, key: str, *args: bytes | str | int) -> Awaitable[Any]:
        """One command on the primary of ``key``'s slot (MOVED and ASK followed)."""
        return self._call(key, pack(*args))

    def _ready(self, raw_key: bytes) -> RespConnection | None:
        """The open connection to the key's primary, when a read needs no await to get it."""
        by_slot = self._by_slot
        if by_slot is None:
            return None
        node = by_slot[key_slot(raw_key)]
        return None if node is None else node.ready()

    async def _connection(self, raw_key: bytes) -> RespConnection:
        by_slot = self._by_slot
        if by_slot is None:
            await self.refresh()
            by_slot = self._by_slot
            assert by_slot is not None
        node = by_slot[key_slot(raw_key)]
        if node is None:
            self.refresh_soon()
            raise ClusterDownError("CLUSTERDOWN Hash slot not served")
        return node.ready() or await node.connect()

    async def _redirected(self, error: ResponseError, parts: Sequence[bytes]) -> list[Any]:
        """Follow MOVED and ASK: send ``parts`` (one command each) where Redis says."""
        try:
            return await self._follow(error, parts)
        except _FAILOVER_ERRORS:
            self.refresh_soon()
            raise

    async def _follow(self, error: ResponseError, parts: Sequence[bytes]) -> list[Any]:
        for _ in range(_MAX_REDIRECTS):
            redirect = _parse_redirect(error)
            if redirect is None:
                raise error
            kind, slot, host, port = redirect
            host = host or self._settings.host  # a node that does not know its address
            REDIS_REDIRECTS.labels(kind).inc()
            node = self._node(host, port)
            if kind == "moved":
                if self._by_slot is not None:
                    self._by_slot[slot] = node
                self.refresh_soon(at_once=True)
            if self.on_redirect is not None:
                self.on_redirect(kind, host, port)
            conn = node.ready() or await node.connect()
            if kind == "ask":  # ASKING lets the importing node answer the next command only
                sent = conn.calln(b"".join(_ASKING + part for part in parts), 2 * len(parts))
                for asking in sent[0::2]:
                    _retrieve(asking)
                futures = sent[1::2]
            else:
                futures = conn.calln(b"".join(parts), len(parts))
            try:
                return [await future for future in futures]
            except ResponseError as again:
                for future in futures:
                    _retrieve(future)
                error = again
        raise error

    # ---------------------------------------------------------- the map

    def refresh_soon(self, at_once: bool = False) -> None:
        """Read the map again in the background (after a failure, not more often than
        every ``_REFRESH_MIN_S``)."""
        if self._closed or self._loading is not None:
            return
        loop = asyncio.get_running_loop()
        if at_once or loop.time() - self._loaded_at >= _REFRESH_MIN_S:
            self._start_loading()

    async def refresh(self) -> Topology:
        """Read the map now (one read at a time, shared by every caller)."""
        if self._closed:
            raise RedisConnectionError("Client closed.")
        loading = self._loading or self._start_loading()
        return await asyncio.shield(loading)

    def _start_loading(self) -> asyncio.Future[Topology]:
        loading = self._loading = asyncio.ensure_future(self._load())
        loading.add_done_callback(self._loaded)
        return loading

    def _loaded(self, task: asyncio.Future[Topology]) -> None:
        self._loading = None
        self._loaded_at = asyncio.get_running_loop().time()
        if not task.cancelled():
            task.exception()  # a background refresh may have no one waiting

    async def _load(self) -> Topology:
        seed = (self._settings.host, self._settings.port)
        candidates = list(dict.fromkeys([*self._nodes, seed]))  # known primaries first
        error: BaseException = RedisConnectionError("no cluster node to ask")
        for address in candidates:
            node = self._nodes.get(address) or LeanRedis(self._at(*address), self._name)
            try:
                topology = await _read_topology(await node.connect(), address[0],
                                                self._settings.tls)
            except (RedisError, OSError) as exc:
                error = exc
                continue
            finally:
                if address not in self._nodes:
                    await node.close()
            REDIS_TOPOLOGY_LOADS.labels("ok").inc()
            self._install(topology)
            return topology
        REDIS_TOPOLOGY_LOADS.labels("error").inc()
        raise error

    def _install(self, topology: Topology) -> None:
        for node in self._retired:  # one map later: calls in flight on them have ended
            asyncio.ensure_future(node.close())
        wanted = {(p.host, p.port) for p in topology.primaries}
        self._retired = [node for address, node in self._nodes.items() if address not in wanted]
        self._nodes = {address: node for address, node in self._nodes.items() if address in wanted}
        by_slot: list[LeanRedis | None] = [
            None if p is None else self._node(p.host, p.port) for p in topology.owners()]
        self._by_slot = by_slot
        if topology != self.topology:
            log.info("Redis Cluster: %d primaries, %s", len(topology.primaries),
                     "every slot served" if topology.covered else "some slots not served")
        self.topology = topology

    def _node(self, host: str, port: int) -> LeanRedis:
        node = self._nodes.get((host, port))
        if node is None:
            node = self._nodes[(host, port)] = LeanRedis(self._at(host, port), self._name)
        return node

    def _at(self, host: str, port: int) -> RedisSettings:
        return dataclasses.replace(self._settings, host=host, port=port)

    def primary_settings(self, primary: Primary) -> RedisSettings:
        """Settings that reach ``primary`` (for the tracking connections)."""
        return self._at(primary.host, primary.port)

    async def close(self) -> None:
        self._closed = True
        if self._loading is not None:
            self._loading.cancel()
        for node in [*self._nodes.values(), *self._retired]:
            await node.close()
        self._nodes, self._retired, self._by_slot = {}, [], None


async def _read_topology(conn: RespConnection, host: str, tls: bool) -> Topology:
    try:
        return parse_shards(await conn.call(_SHARDS), host, tls)
    except ResponseError:  # a server before Redis 7, or an ACL that allows only CLUSTER SLOTS
        return parse_slots(await conn.call(_SLOTS), host)


def _parse_redirect(error: ResponseError) -> tuple[str, int, str, int] | None:
    """("moved"|"ask", slot, host, port) of a redirection, None for any other error."""
    words = str(error).split()
    if len(words) != 3 or words[0] not in ("MOVED", "ASK"):
        return None
    host, _, port = words[2].rpartition(":")
    return words[0].lower(), int(words[1]), host, int(port)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Its reply is not wanted: never let a failure of it go unretrieved."""
    if future.done():
        if not future.cancelled():
            future.exception()
    else:
        future.add_done_callback(_retrieve)
