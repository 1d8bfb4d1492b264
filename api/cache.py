"""The fill protocol: cache-aside that cannot store a stale row (DESIGN.md, "Reads").

GET → hit; miss → lease (SET NX PX), SELECT, compare-and-set store that fails
if an invalidation removed or replaced the lease; someone else's lease → wait
briefly, then read MySQL without storing.  Concurrent misses of one key in this
process share one fill (single-flight), so N cold readers cost one SELECT.

Hot reads (GET, MGET) go through the worker's lean connection (api/lean.py);
with a near-cache (api/nearcache.py) a user is first looked up in the worker's
memory, and a GET that finds a value is also a tracked read that may keep it there.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, NamedTuple, TypeVar, cast

from redis.asyncio import Redis, RedisCluster

from api.db import REPLICA, Source, primary
from api.freshness import AppliedWatch, Freshness
from api.lean import HotReads, Script, run_script
from api.nearcache import NearCache
from api.redisconn import REDIS_FAILURES, Guard, RedisUnavailable
from cachetail import keyspace
from cachetail.gtid import GtidState
from cachetail.keyspace import Keyspace, is_lease, is_negative, stamp, unstamp
from cachetail.scripts import CAS_STORE, ENTITY_LEASE, LEASE_RELEASE, LIST_CAS_STORE, LIST_LEASE
from cachetail.settings import CacheSettings
from metrics.api import CACHE_FILLS, CACHE_LOOKUP_SECONDS, CACHE_LOOKUPS, FILLS_IN_FLIGHT, HOT
from metrics.batched import Counted, Timed

T = TypeVar("T")
HIT, MISS, BYPASS, PRIMARY = "HIT", "MISS", "BYPASS", "PRIMARY"
FOUND, LEASED, ABSENT = "found", "leased", "absent"  # what a read found in the key

# (body or None, storable), read from the given source
EntityLoader = Callable[[Source], Awaitable[tuple[bytes | None, bool]]]
ListLoader = Callable[[Source], Awaitable[bytes]]
# Called between the SELECT and the compare-and-set store, with the key: a seam
# for tests that must put an invalidation at exactly that point.
AfterSelect = Callable[[str], Awaitable[None]]
# Called between a tracked GET's reply and the near-cache keeping it: the same
# kind of seam, for the race between a reply and its key's invalidation (tests
# set ``Cache.after_tracked_read``).
AfterTrackedRead = Callable[[str], Awaitable[None]]

_POLL_FIRST_S = 0.002
_POLL_MAX_S = 0.025


NEAR, REDIS = "near", "redis"  # where a hit came from (the X-Cache-Tier header)


class Answer(NamedTuple):  # a tuple: the cheapest record to build on a near-cache hit
    body: bytes | None  # None: no such row
    source: str  # HIT, MISS, BYPASS or PRIMARY (the X-Cache header)
    tier: str | None = None  # NEAR or REDIS for a hit


class Cache:
    def __init__(self, client: Redis | RedisCluster, guard: Guard, keys: Keyspace,
                 settings: CacheSettings, *, after_select: AfterSelect | None = None,
                 lean: HotReads | None = None, near: NearCache | None = None,
                 fresh: Freshness | None = None, applied: AppliedWatch | None = None,
                 min_gtid_wait_s: float = 0.2) -> None:
        if near is not None and lean is None:
            raise ValueError("the near-cache reads through the lean connection")
        self._redis = client
        self._fresh = fresh
        self.applied = applied
        self._min_gtid_wait_s = min_gtid_wait_s
        self._lean = lean
        self._near = near
        self.after_tracked_read: AfterTrackedRead | None = None
        self._guard = guard
        self._hot_bounded = lean is None  # the lean connections hold no pooled connection
        self._keys = keys
        self._lease_ms = settings.lease_ms
        self._wait_s = settings.lease_wait_ms / 1000
        self._after_select = after_select
        # fills' commands go where the hot reads go (pipelined, hiredis) when there is a lean
        # connection; through redis-py otherwise
        self._scripts = {text: client.register_script(text) for text in _SCRIPTS}
        self._flights: dict[Hashable, asyncio.Future[Any]] = {}

    # --------------------------------------------------------------- entities

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
                answer = await self._bypass(key, load, None)
            else:
                if value is not None and not is_lease(value):
                    answer = Answer(None if is_negative(value) else value, HIT, REDIS)
                else:
                    answer = await self._miss(name, key, load, ttl_s, negative_ttl_s, None)
        else:
            answer = await self._entity(name, key, load, near, ttl_s, negative_ttl_s, None)
        _count(name, answer, started)
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
            return await self._bypass(key, load, need)
        if value is not None and not is_lease(value):
            return Answer(None if is_negative(value) else value, HIT, REDIS)
        return await self._miss(name, key, load, ttl_s, negative_ttl_s, need)

    def _miss(self, name: str, key: str, load: EntityLoader, ttl_s: int, negative_ttl_s: int,
              need: GtidState | None) -> Awaitable[Answer]:
        """No value in Redis: the fill's answer (one fill per key and worker at a time)."""
        # a fill for a Cachetail-Min-GTID shares no flight begun before that state was applied
        flight = key if need is None else (key, need)
        return self._shared(flight, lambda: self._fill_entity(name, key, load, ttl_s, negative_ttl_s, need))

    async def _bypass(self, key: str, load: EntityLoader, need: GtidState | None) -> Answer:
        """Redis unavailable: read MySQL, store nothing (concurrent bypasses of a key share it)."""
        body = _body(load)
        return Answer(await self._shared(("bypass", key, need), lambda: body(self._unleased(need))), BYPASS)

    async def _needing(self, need: GtidState, near: bool, answer: Callable[[], Awaitable[Answer]],
                       body: Callable[[Source], Awaitable[bytes | None]]) -> Answer:
        """Answer once the invalidator has applied ``need``, through this worker's near-cache
        once it has heard the invalidations up to it; not applied in time: from the primary,
        stored nowhere.  Redis unavailable: read as a bypass does, as fresh as ``need``."""
        applied = self.applied
        if applied is None:
            return Answer(await body(self._unleased(need)), BYPASS)
        try:
            reached = await self._guard.run(
                "get", lambda: applied.reach(need, self._min_gtid_wait_s), bounded=self._hot_bounded)
        except RedisUnavailable:
            return Answer(await body(self._unleased(need)), BYPASS)
        if not reached:
            return Answer(await body(primary("min_gtid")), PRIMARY)
        if near and self._near is not None and self._near.live:
            await applied.near_synced(need)
        return await answer()

    def _unleased(self, need: GtidState | None) -> Source:
        return self._fresh.unleased(need) if self._fresh is not None else REPLICA

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
        token = _token()
        try:
            source = await self._guard.run("lease", lambda: self._lease_entity(key, token, need),
                                           bounded=self._hot_bounded)
        except RedisUnavailable:
            return Answer(await _body(load)(self._unleased(need)), BYPASS)
        if source is None:
            return await self._wait(name, key, _body(load), self._read_entity)
        with _in_flight(name):
            body, storable = await self._load_holding(key, token, lambda: load(source))
            if not storable or (body is None and negative_ttl_s <= 0):
                await self._give_back(key, token)
                _filled(name, "uncached")
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

    # ------------------------------------------------------------------ lists

    async def listing(self, name: str, gen_key: str, key: str, load: ListLoader, *, ttl_s: int,
                      need: GtidState | None = None) -> Answer:
        """One page of a list variant, stamped with the variant's generation (same slot)."""
        started = time.perf_counter()
        if need is not None:
            answer = await self._needing(need, False, lambda: self._listing(
                name, gen_key, key, load, ttl_s, need), load)
        else:
            answer = await self._listing(name, gen_key, key, load, ttl_s, None)
        _count(name, answer, started)
        return answer

    async def _listing(self, name: str, gen_key: str, key: str, load: ListLoader, ttl_s: int,
                       need: GtidState | None) -> Answer:
        read = functools.partial(self._read_list, gen_key)
        try:
            state, body = await read(key)
        except RedisUnavailable:
            return Answer(await self._shared(("bypass", key, need), lambda: load(self._unleased(need))), BYPASS)
        if state == FOUND:
            return Answer(body, HIT, REDIS)
        flight = key if need is None else (key, need)
        return await self._shared(flight, lambda: self._fill_list(name, gen_key, key, load, ttl_s, need))

    async def _fill_list(self, name: str, gen_key: str, key: str, load: ListLoader, ttl_s: int,
                         need: GtidState | None) -> Answer:
        token = _token()
        fresh = self._fresh
        marks = fresh.watermarks(gen_key) if fresh is not None and fresh.separate else []
        try:
            reply = await self._guard.run("lease", lambda: self._script(
                LIST_LEASE, [gen_key, key, *marks], [token, self._lease_ms]), bounded=self._hot_bounded)
        except RedisUnavailable:
            return Answer(await load(self._unleased(need)), BYPASS)
        state, payload = reply[0], reply[1]
        if state == 2:  # another fill stored it since our read
            _filled(name, "waited")
            return Answer(payload[payload.index(b"\n") + 1:], MISS)
        if state == 0:
            return await self._wait(name, key, load, functools.partial(self._read_list, gen_key))
        source = fresh.for_fill(reply[2], reply[3:], need) if marks and fresh is not None else Source(wait=need)
        with _in_flight(name):
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

    # ----------------------------------------------------------------- common

    def _script(self, text: str, keys: list[str], args: list[Any]) -> Awaitable[Any]:
        """One of the fills' scripts (cachetail/keyspace.py), on one slot's keys."""
        if self._lean is not None:
            return run_script(self._lean, _LEAN_SCRIPTS[text], keys, args)
        return self._scripts[text](keys=keys, args=args)  # type: ignore[no-any-return]

    async def _get(self, key: str) -> bytes | None:
        if self._lean is not None:
            return await self._lean.get(key)
        return cast("bytes | None", await self._redis.get(key))

    async def _mget_list(self, gen_key: str, key: str) -> tuple[bytes | None, bytes | None]:
        if self._lean is not None:
            gen, value = await self._lean.mget(gen_key, key)
            return gen, value
        found = await self._redis.mget(gen_key, key)
        return cast("bytes | None", found[0]), cast("bytes | None", found[1])

    async def _load_holding(self, key: str, token: bytes, load: Callable[[], Awaitable[T]]) -> T:
        """Load while holding the lease; give the lease back if the load fails."""
        try:
            body = await load()
        except BaseException:
            await self._give_back(key, token)
            raise
        if self._after_select is not None:
            await self._after_select(key)
        return body

    async def _give_back(self, key: str, token: bytes) -> None:
        """Release our lease (only while the key still holds it), so waiters stop waiting."""
        try:
            await asyncio.shield(self._guard.run(
                "release", lambda: self._script(LEASE_RELEASE, [key], [token]), bounded=self._hot_bounded))
        except (RedisUnavailable, asyncio.CancelledError):
            pass

    async def _store(self, entity: str, cas: Callable[[], Awaitable[Any]]) -> None:
        try:
            stored = await self._guard.run("store", cas, bounded=self._hot_bounded)
        except RedisUnavailable:
            _filled(entity, "uncached")
            return
        # A lost compare-and-set: an invalidation replaced or removed our lease
        # after the SELECT, so what we read may be stale; answer it, never store it.
        _filled(entity, "stored" if stored == 1 else "stale_prevented")

    async def _wait(self, entity: str, key: str, load: Callable[[Source], Awaitable[Any]],
                    read: Callable[[str], Awaitable[tuple[str, bytes | None]]]) -> Answer:
        """Another process holds the lease: poll for its value, bounded, then read MySQL
        without storing (we hold no lease; storing could put back a stale row).  That read
        goes to the primary where there is a replica: no watermark says how fresh it must be."""
        deadline = time.monotonic() + self._wait_s
        delay = _POLL_FIRST_S
        while (remaining := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, _POLL_MAX_S)
            try:
                state, body = await read(key)
            except RedisUnavailable:
                return Answer(await load(self._contended()), BYPASS)
            if state == FOUND:
                _filled(entity, "waited")
                return Answer(body, MISS)
            if state == ABSENT:  # the lease was invalidated: its value will not come
                break
        _filled(entity, "uncached")
        return Answer(await load(self._contended()), MISS)

    def _contended(self) -> Source:
        return self._fresh.contended() if self._fresh is not None else REPLICA

    async def _shared(self, flight: Hashable, make: Callable[[], Awaitable[T]]) -> T:
        """Single-flight: one run of ``make`` per key at a time; a caller's cancellation
        (client gone) does not cancel the run the others wait for."""
        task = self._flights.get(flight)
        if task is None:
            task = asyncio.ensure_future(make())
            self._flights[flight] = task
            task.add_done_callback(lambda done: self._landed(flight, done))
        result: T = await asyncio.shield(task)
        return result

    def _landed(self, flight: Hashable, task: asyncio.Future[Any]) -> None:
        if self._flights.get(flight) is task:
            del self._flights[flight]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have gone


_SCRIPTS = (CAS_STORE, ENTITY_LEASE, LEASE_RELEASE, LIST_LEASE, LIST_CAS_STORE)
_LEAN_SCRIPTS = {text: Script.of(text) for text in _SCRIPTS}


def _body(load: EntityLoader) -> Callable[[Source], Awaitable[bytes | None]]:
    """The loader's body alone, for answers that never store (bypasses, waiters)."""
    async def body(source: Source) -> bytes | None:
        return (await load(source))[0]

    return body


class _Tokens:
    """Lease tokens: a random prefix per process (drawn again in a forked child) and a
    counter, unique as sixteen random bytes per token are, at a twentieth of their cost."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self._prefix = keyspace.LEASE + secrets.token_hex(12).encode() + b"-"
        self._count = itertools.count()

    def __call__(self) -> bytes:
        return self._prefix + b"%x" % next(self._count)


_token = _Tokens()


def _count(entity: str, answer: Answer, started: float) -> None:
    cells = _LOOKUP_CELLS.get((entity, answer.source)) or _lookup_cells(entity, answer.source)
    cells[0].inc()
    cells[1].observe(time.perf_counter() - started)


# Resolved once per (entity, result): labels() costs a lock and a key per call; the updates
# are batched (metrics/batched.py).
_LOOKUP_CELLS: dict[tuple[str, str], tuple[Counted, Timed]] = {}
_FILL_CELLS: dict[tuple[str, str], Counted] = {}
_IN_FLIGHT: dict[str, Any] = {}


def _filled(entity: str, result: str) -> None:
    cell = _FILL_CELLS.get((entity, result))
    if cell is None:
        cell = _FILL_CELLS[(entity, result)] = HOT.counter(CACHE_FILLS.labels(entity, result))
    cell.inc()


def _in_flight(entity: str) -> Any:
    """The entity's fills-in-flight gauge, tracking a block (not batched: a scrape sees
    the fills running as it reads)."""
    child = _IN_FLIGHT.get(entity)
    if child is None:
        child = _IN_FLIGHT[entity] = FILLS_IN_FLIGHT.labels(entity)
    return child.track_inprogress()


def _lookup_cells(entity: str, source: str) -> tuple[Counted, Timed]:
    result = source.lower()
    cells = _LOOKUP_CELLS[(entity, source)] = (HOT.counter(CACHE_LOOKUPS.labels(entity, result)),
                                                HOT.histogram(CACHE_LOOKUP_SECONDS.labels(entity, result)))
    return cells
