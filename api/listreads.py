"""List reads: one page of a list variant through the fill protocol (api/fills.py).

A page is stored stamped with its variant's generation, read with it in one MGET
(both keys share a slot), and served only while the stamp matches the generation.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import cast

from api.answer import ABSENT, BYPASS, FOUND, HIT, LEASED, MISS, REDIS, Answer, count
from api.db import Source
from api.fills import Fills, filled, in_flight, lease_token
from api.redisconn import RedisUnavailable
from cachetail.gtid import GtidState
from cachetail.keyspace import is_lease, stamp, unstamp
from cachetail.scripts import LIST_CAS_STORE, LIST_LEASE

ListLoader = Callable[[Source], Awaitable[bytes]]


class ListReads(Fills):
    async def listing(self, name: str, gen_key: str, key: str, load: ListLoader, *, ttl_s: int,
                      need: GtidState | None = None) -> Answer:
        """One page of a list variant, stamped with the variant's generation (same slot)."""
        started = time.perf_counter()
        if need is not None:
            answer = await self._needing(need, False, lambda: self._listing(
                name, gen_key, key, load, ttl_s, need), load)
        else:
            answer = await self._listing(name, gen_key, key, load, ttl_s, None)
        count(name, answer, started)
        return answer

    async def _listing(self, name: str, gen_key: str, key: str, load: ListLoader, ttl_s: int,
                       need: GtidState | None) -> Answer:
        read = functools.partial(self._read_list, gen_key)
        try:
            state, body = await read(key)
        except RedisUnavailable:
            return await self._bypass(key, load, need)
        if state == FOUND:
            return Answer(body, HIT, REDIS)
        return await self._fill_once(key, need, lambda: self._fill_list(name, gen_key, key, load, ttl_s, need))

    async def _fill_list(self, name: str, gen_key: str, key: str, load: ListLoader, ttl_s: int,
                         need: GtidState | None) -> Answer:
        token = lease_token()
        fresh = self._fresh
        marks = fresh.watermarks(gen_key) if fresh is not None and fresh.separate else []
        try:
            reply = await self._guard.run("lease", lambda: self._script(
                LIST_LEASE, [gen_key, key, *marks], [token, self._lease_ms]), bounded=self._hot_bounded)
        except RedisUnavailable:
            return Answer(await load(self._unleased(need)), BYPASS)
        state, payload = reply[0], reply[1]
        if state == 2:  # another fill stored it since our read
            filled(name, "waited")
            return Answer(payload[payload.index(b"\n") + 1:], MISS)
        if state == 0:
            return await self._wait(name, key, load, functools.partial(self._read_list, gen_key))
        source = fresh.for_fill(reply[2], reply[3:], need) if marks and fresh is not None else Source(wait=need)
        with in_flight(name):
            body = await self._load_holding(key, token, lambda: load(source))
            value = stamp(int(payload), body)
            await self._store(name, lambda: self._script(
                LIST_CAS_STORE, [gen_key, key], [token, payload, value, ttl_s]))
        return Answer(body, MISS)

    async def _read_list(self, gen_key: str, key: str) -> tuple[str, bytes | None]:
        """The generation and the page in one round trip (one slot, one MGET)."""
        gen, value = await self._guard.run("get", lambda: self._mget_list(gen_key, key),
                                           bounded=self._hot_bounded)
        if value is None:
            return ABSENT, None
        if is_lease(value):
            return LEASED, None
        body = unstamp(value, gen)
        return (ABSENT, None) if body is None else (FOUND, body)

    async def _mget_list(self, gen_key: str, key: str) -> tuple[bytes | None, bytes | None]:
        if self._lean is not None:
            gen, value = await self._lean.mget(gen_key, key)
            return gen, value
        found = await self._redis.mget(gen_key, key)
        return cast("bytes | None", found[0]), cast("bytes | None", found[1])

