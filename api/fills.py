"""The fill protocol's steps, shared by entity and list reads (api/cache.py,
api/listreads.py): the lease's holding and giving back, the compare-and-set store,
waiting on another process's fill, single-flight, the fills' scripts, and reads
that must reflect a Cachetail-Min-GTID.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar, cast

from redis.asyncio import Redis, RedisCluster

from api.answer import ABSENT, BYPASS, FOUND, MISS, PRIMARY, Answer
from api.db import REPLICA, Source, primary
from api.freshness import AppliedWatch, Freshness
from api.lean import HotReads, Script, run_script
from api.nearcache import NearCache
from api.redisconn import Guard, RedisUnavailable
from cachetail import keyspace
from cachetail.gtid import GtidState
from cachetail.keyspace import Keyspace
from cachetail.scripts import CAS_STORE, ENTITY_LEASE, LEASE_RELEASE, LIST_CAS_STORE, LIST_LEASE
from cachetail.settings import CacheSettings
from metrics.api import CACHE_FILLS, FILLS_IN_FLIGHT, HOT
from metrics.batched import Counted

T = TypeVar("T")

# Called between the SELECT and the compare-and-set store, with the key: a seam
# for tests that must put an invalidation at exactly that point.
AfterSelect = Callable[[str], Awaitable[None]]
# Called between a tracked GET's reply and the near-cache keeping it: the same
# kind of seam, for the race between a reply and its key's invalidation (tests
# set ``Cache.after_tracked_read``).
AfterTrackedRead = Callable[[str], Awaitable[None]]

_POLL_FIRST_S = 0.002
_POLL_MAX_S = 0.025


class Fills:
    """The state every read shares and the steps every fill takes."""

    def __init__(self, client: Redis | RedisCluster, guard: Guard, keys: Keyspace,
                 settings: CacheSettings, *, after_select: AfterSelect | None = None,
                 lean: HotReads | None = None, near: NearCache | None = None,
                 fresh: Freshness | None = None, applied: AppliedWatch | None = None,
                 min_gtid_wait_s: float = 0.2) -> None:
        if near is not None and lean is None:
            raise ValueError("the near-cache reads through the lean connection")
        self._redis = client
        self._guard = guard
        self._hot_bounded = lean is None  # the lean connections hold no pooled connection
        self._lean = lean
        self._near = near
        self.after_tracked_read: AfterTrackedRead | None = None
        self._keys = keys
        self._lease_ms = settings.lease_ms
        self._wait_s = settings.lease_wait_ms / 1000
        self._after_select = after_select
        self._fresh = fresh
        self.applied = applied
        self._min_gtid_wait_s = min_gtid_wait_s
        # fills' commands go where the hot reads go (pipelined, hiredis) when there is a lean
        # connection; through redis-py otherwise
        self._scripts = {text: client.register_script(text) for text in _SCRIPTS}
        self._flights: dict[Hashable, asyncio.Future[Any]] = {}

    # ------------------------------------------------------------- freshness

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

    def _contended(self) -> Source:
        return self._fresh.contended() if self._fresh is not None else REPLICA

    # ----------------------------------------------------------------- fills

    def _script(self, text: str, keys: list[str], args: list[Any]) -> Awaitable[Any]:
        """One of the fills' scripts (cachetail/scripts.py), on one slot's keys."""
        if self._lean is not None:
            return run_script(self._lean, _LEAN_SCRIPTS[text], keys, args)
        return self._scripts[text](keys=keys, args=args)

    async def _get(self, key: str) -> bytes | None:
        if self._lean is not None:
            return await self._lean.get(key)
        return cast("bytes | None", await self._redis.get(key))

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
            filled(entity, "uncached")
            return
        # A lost compare-and-set: an invalidation replaced or removed our lease
        # after the SELECT, so what we read may be stale; answer it, never store it.
        filled(entity, "stored" if stored == 1 else "stale_prevented")

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
                filled(entity, "waited")
                return Answer(body, MISS)
            if state == ABSENT:  # the lease was invalidated: its value will not come
                break
        filled(entity, "uncached")
        return Answer(await load(self._contended()), MISS)

    def _fill_once(self, key: str, need: GtidState | None,
                   fill: Callable[[], Awaitable[Answer]]) -> Awaitable[Answer]:
        """One fill per key and worker at a time; a fill for a Cachetail-Min-GTID shares no
        flight begun before that state was applied."""
        return self._shared(key if need is None else (key, need), fill)

    async def _bypass(self, key: str, body: Callable[[Source], Awaitable[bytes | None]],
                      need: GtidState | None) -> Answer:
        """Redis unavailable: read MySQL, store nothing (concurrent bypasses of a key share it)."""
        return Answer(await self._shared(("bypass", key, need), lambda: body(self._unleased(need))), BYPASS)

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


lease_token = _Tokens()


_FILL_CELLS: dict[tuple[str, str], Counted] = {}
_IN_FLIGHT: dict[str, Any] = {}


def filled(entity: str, result: str) -> None:
    cell = _FILL_CELLS.get((entity, result))
    if cell is None:
        cell = _FILL_CELLS[(entity, result)] = HOT.counter(CACHE_FILLS.labels(entity, result))
    cell.inc()


def in_flight(entity: str) -> Any:
    """The entity's fills-in-flight gauge, tracking a block (not batched: a scrape sees
    the fills running as it reads)."""
    child = _IN_FLIGHT.get(entity)
    if child is None:
        child = _IN_FLIGHT[entity] = FILLS_IN_FLIGHT.labels(entity)
    return child.track_inprogress()


