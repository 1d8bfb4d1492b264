"""The fill protocol: cache-aside that cannot store a stale row (docs/protocol.md).

GET → hit; miss → lease (SET NX PX), SELECT, compare-and-set store that fails
if an invalidation removed or replaced the lease; someone else's lease → wait
briefly, then read MySQL without storing.  Concurrent misses of one key in this
process share one fill (single-flight), so N cold readers cost one SELECT.

Hot reads (GET, MGET) go through the worker's lean connection (api/lean.py);
with a near-cache (api/nearcache.py) a user is first looked up in the worker's
memory, and a GET that finds a value is also a tracked read that may keep it there.

This module reads entities; list reads are in api/listreads.py, and the steps
every fill takes (leases, store, waiting, single-flight, scripts) in api/fills.py.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from api.answer import ABSENT, BYPASS, FOUND, HIT, LEASED, MISS, NEAR, REDIS, Answer, count
from api.db import Source
from api.fills import filled, in_flight, lease_token
from api.listreads import ListReads
from api.redisconn import REDIS_FAILURES, RedisUnavailable
from cachetail import keyspace
from cachetail.gtid import GtidState
from cachetail.keyspace import is_lease, is_negative
from cachetail.scripts import CAS_STORE, ENTITY_LEASE

# (body or None, storable), read from the given source
EntityLoader = Callable[[Source], Awaitable[tuple[bytes | None, bool]]]


class Cache(ListReads):
    """Entity reads (near-cache, Redis, fill), over list reads and the fills' steps."""

    async def entity(self, name: str, key: str, load: EntityLoader, *, near: bool, ttl_s: int,
                     negative_ttl_s: int, need: GtidState | None = None) -> Answer:
        """One row by its key: near-cache (when ``near``), Redis, else a leased fill.
        ``load`` gives the row's bytes (None: no row) and whether they may be stored under
        ``key`` (False: another spelling of the row's key, or a 404 that must not be cached).
        ``need``: a Cachetail-Min-GTID the answer must reflect (see api/freshness.py)."""
        started = time.perf_counter()
        if need is not None:
            answer = await self._needing(need, near, lambda: self._entity(
                name, key, load, near, ttl_s, negative_ttl_s, need), _body(load))
        elif near and self._near is not None:
            value = self._near.get(key)
            if value is not None:  # the hot path: nothing to await
                answer = Answer(None if is_negative(value) else value, HIT, NEAR)
            else:
                answer = await self._entity(name, key, load, near, ttl_s, negative_ttl_s, None)
        elif self._lean is not None and not self._guard.breaker.is_open:
            # the hot read without a near-cache: its GET awaited here, no coroutine of its own
            try:
                value = await self._lean.get(key)
            except REDIS_FAILURES as exc:
                self._guard.failed("get", exc)
                answer = await self._bypass(key, _body(load), None)
            else:
                if value is not None and not is_lease(value):
                    answer = Answer(None if is_negative(value) else value, HIT, REDIS)
                else:
                    answer = await self._miss(name, key, load, ttl_s, negative_ttl_s, None)
        else:
            answer = await self._entity(name, key, load, near, ttl_s, negative_ttl_s, None)
        count(name, answer, started)
        return answer

    async def _entity(self, name: str, key: str, load: EntityLoader, near: bool, ttl_s: int,
                      negative_ttl_s: int, need: GtidState | None) -> Answer:
        if need is not None and near and self._near is not None:
            value = self._near.get(key)  # heard every invalidation up to ``need`` (see _needing)
            if value is not None:
                return Answer(None if is_negative(value) else value, HIT, NEAR)
        try:
            value = await self._guard.run("get", lambda: self._tracked_get(key, near),
                                          bounded=self._hot_bounded)
        except RedisUnavailable:
            return await self._bypass(key, _body(load), need)
        if value is not None and not is_lease(value):
            return Answer(None if is_negative(value) else value, HIT, REDIS)
        return await self._miss(name, key, load, ttl_s, negative_ttl_s, need)

    def _miss(self, name: str, key: str, load: EntityLoader, ttl_s: int, negative_ttl_s: int,
              need: GtidState | None) -> Awaitable[Answer]:
        """No value in Redis: the fill's answer."""
        return self._fill_once(key, need, lambda: self._fill_entity(name, key, load, ttl_s, negative_ttl_s, need))

    async def _tracked_get(self, key: str, near: bool) -> bytes | None:
        """GET, and with a live near-cache keep what it found unless the key's
        invalidation crossed the reply (see api/nearcache.py)."""
        ticket = None if self._near is None or not near else self._near.begin(key)
        if ticket is None:
            return await self._get(key)
        assert self._near is not None and self._lean is not None
        value, pttl = None, -2
        try:
            value, pttl = await self._lean.get_with_pttl(key)
            if self.after_tracked_read is not None:
                await self.after_tracked_read(key)
        finally:
            self._near.finish(ticket, value, pttl)
        return value

    async def _fill_entity(self, name: str, key: str, load: EntityLoader, ttl_s: int,
                           negative_ttl_s: int, need: GtidState | None) -> Answer:
        token = lease_token()
        try:
            source = await self._guard.run("lease", lambda: self._lease_entity(key, token, need),
                                           bounded=self._hot_bounded)
        except RedisUnavailable:
            return Answer(await _body(load)(self._unleased(need)), BYPASS)
        if source is None:
            return await self._wait(name, key, _body(load), self._read_entity)
        with in_flight(name):
            body, storable = await self._load_holding(key, token, lambda: load(source))
            if not storable or (body is None and negative_ttl_s <= 0):
                await self._give_back(key, token)
                filled(name, "uncached")
                return Answer(body, MISS)
            value, ttl = (keyspace.NEGATIVE, negative_ttl_s) if body is None else (body, ttl_s)
            await self._store(name, lambda: self._script(CAS_STORE, [key], [token, value, ttl]))
        return Answer(body, MISS)

    async def _lease_entity(self, key: str, token: bytes, need: GtidState | None) -> Source | None:
        """Take the fill's lease (None: someone else's lease, or a value, is there) and say
        where the fill reads: with a replica, as the watermarks read with the lease say."""
        fresh = self._fresh
        if fresh is None or not fresh.separate:
            taken = await (self._lean.command(key, "SET", key, token, "NX", "PX", self._lease_ms)
                           if self._lean is not None else
                           self._redis.set(key, token, nx=True, px=self._lease_ms))
            return Source(wait=need) if taken else None
        reply = await self._script(ENTITY_LEASE, [key, *fresh.watermarks(key)], [token, self._lease_ms])
        if reply[0] != 1:
            return None
        return fresh.for_fill(reply[1], reply[2:], need)

    async def _read_entity(self, key: str) -> tuple[str, bytes | None]:
        value = await self._guard.run("get", lambda: self._get(key), bounded=self._hot_bounded)
        if value is None:
            return ABSENT, None
        if is_lease(value):
            return LEASED, None
        return FOUND, None if is_negative(value) else value


def _body(load: EntityLoader) -> Callable[[Source], Awaitable[bytes | None]]:
    """The loader's body alone, for answers that never store (bypasses, waiters)."""
    async def body(source: Source) -> bytes | None:
        return (await load(source))[0]

    return body

