"""Freshness by GTID: fills from a replica, and reads that must reflect their client's write.

**Fills from a replica.**  The invariant: a fill never stores a row older than an
invalidation of its key that the invalidator had applied before the fill took its lease.
The invalidator marks, in the same atomic script as the invalidation, the watermark of the
key's hash slot (``<ms> <GTID state>``; on one Redis node, big batches mark the node's
watermark instead, see :meth:`cachetail.keyspace.Keyspace.watermarks`).  The fill's lease
reads those watermarks atomically with the lease (same slot, so on a cluster too).  Every
invalidation of the key applied before the lease is in them; every one after replaces the
lease, and the fill's compare-and-set fails.  So the fill reads the replica once it has
applied the watermarks' state (``MASTER_GTID_WAIT`` / ``WAIT_FOR_EXECUTED_GTID_SET``, in the
same round trip as the SELECT), or the primary when it does not within DB_READ_WAIT_MS.
With ``DB_READ_MAX_LAG_MS`` (servers that cannot wait on a GTID: Aurora readers) it reads
the primary while the slot changed less than that long ago, by the Redis clock.  No
watermark at all means the invalidator has not marked this Redis yet: the primary.

**Reads of one's own write.**  A request carrying ``Cachetail-Min-GTID`` is answered only
once the invalidator has applied that state (:class:`AppliedWatch`, which it publishes):
then every invalidation up to it is in Redis, a hit is at least that fresh, and a fill's
watermarks cover it.  A near-cache hit also needs this worker to have heard those
invalidations: a PING round trip on its tracking connection(s) behind the confirmation.
Not applied within API_MIN_GTID_WAIT_MS: the answer comes from the primary, not stored.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.exceptions import RedisError

from api.db import GTID, LAG, REPLICA, Database, Source, primary
from api.errors import ApiError
from api.lean import HotReads, RespConnection, open_connection, pack
from cachetail import gtid
from cachetail.backoff import Backoff
from cachetail.gtid import GtidError, GtidState
from cachetail.keyspace import Keyspace, key_slot, watermark
from cachetail.settings import RedisSettings
from metrics.api import FRESHNESS_WAIT_SECONDS, MIN_GTID_WAITS

log = logging.getLogger("api")

HEADER = b"cachetail-min-gtid"
POLL_S = 0.005  # how often a waiting worker asks Redis, while not subscribed
POLL_SUBSCRIBED_S = 0.05  # ... and while subscribed: only a safety net (pub/sub may drop a message)
IDLE_S = 30.0  # a subscription nobody waited on for this long is closed
RETRY_MAX_S = 2.0

# Where a worker reaches the invalidator's channel: one node's settings, or on a cluster
# the settings of the primary serving the channel's slot (None: not known yet).
Locate = Callable[[], Awaitable[RedisSettings | None]]


class Freshness:
    """Which server a fill or an unstored read goes to, from what its lease found."""

    def __init__(self, db: Database, keys: Keyspace, cluster: bool, max_lag_ms: int) -> None:
        self.db = db
        self.keys = keys
        self.cluster = cluster
        self.max_lag_ms = max_lag_ms

    @property
    def separate(self) -> bool:
        """Reads have an address of their own: fills read the watermarks with their lease."""
        return self.db.separate

    @property
    def flavor(self) -> str | None:
        server = self.db.server
        return None if server is None else server.flavor

    def watermarks(self, key: str) -> list[str]:
        return self.keys.watermarks(key, self.cluster)

    def for_fill(self, now_ms: bytes, marks: Sequence[bytes], need: GtidState | None) -> Source:
        """The source of a fill whose lease read ``marks`` (the last one must exist) at ``now_ms``."""
        server = self.db.server
        if server is None or server.kind not in (GTID, LAG):
            return REPLICA  # one server, or not probed yet: the database layer reads the primary
        found = [watermark(m) for m in marks]
        if found[-1] is None:
            return primary("unmarked")
        present = [w for w in found if w is not None]
        if any(not state for _, state in present):
            return primary("unmarked")  # marked by an invalidator that did not know its GTIDs
        if server.kind == LAG:
            if int(now_ms) - max(ms for ms, _ in present) < self.max_lag_ms:
                return primary("lag")
            return REPLICA
        try:
            target = functools.reduce(GtidState.merge, (_parse(server.flavor, s) for _, s in present))
        except GtidError:
            return primary("unmarked")
        return Source(wait=target if need is None else target.merge(need))

    def unleased(self, need: GtidState | None) -> Source:
        """A read that stores nothing (Redis unavailable, a nocache route): as fresh as the
        replica is, and with ``need`` at least that fresh (the primary where it cannot wait)."""
        server = self.db.server
        if need is None or server is None or server.kind != LAG:
            return Source(wait=need)
        return primary("min_gtid")

    def contended(self) -> Source:
        """After waiting for another process's fill, an answer that is not stored: the primary,
        as fresh as any invalidation applied so far, where there is a replica."""
        return primary("contended") if self.separate else REPLICA


@functools.lru_cache(maxsize=4096)
def _parse(flavor: str, text: str) -> GtidState:
    return gtid.parse(flavor, text)


def min_gtid(headers: Sequence[tuple[bytes, bytes]], fresh: Freshness) -> GtidState | None:
    """The request's Cachetail-Min-GTID, parsed; None without one.  A 400 when it is malformed.
    (On every read: a bare loop over the few headers, nothing else without the header.)"""
    for name, value in headers:
        if name == HEADER:
            return _min_gtid(value, fresh.flavor)
    return None


def _min_gtid(raw: bytes, flavor: str | None) -> GtidState:
    expected = ("a MariaDB GTID or GTID state: domain-server-sequence[,...], as @@last_gtid prints it"
                if flavor != gtid.MYSQL else
                "a MySQL GTID or GTID set: uuid:number[-number][,...], as @@gtid_executed prints it")
    try:
        text = raw.decode("ascii")
        if flavor is None:
            raise GtidError("the database is not known yet")
        return gtid.parse_wanted(flavor, text)
    except (UnicodeDecodeError, GtidError) as exc:
        raise ApiError(400, "invalid_min_gtid", f"Cachetail-Min-GTID must be {expected} ({exc})") from None


class AppliedWatch:
    """What the invalidator has applied, as this worker knows it, and waiting for more.

    The invalidator saves its applied state in ``<prefix>:{inv}:applied`` with its work and
    publishes it on the channel of that name.  A worker reads it when a request needs a
    state it does not know to be applied, subscribes while requests wait (SUBSCRIBE; on a
    cluster SSUBSCRIBE on the channel's primary), and polls meanwhile as a safety net.
    """

    def __init__(self, keys: Keyspace, lean: HotReads, locate: Locate, cluster: bool,
                 flavor: Callable[[], str | None], sync: Callable[[], Awaitable[None]] | None = None) -> None:
        self.key = keys.invalidator_applied()
        self._lean = lean
        self._locate = locate
        self._cluster = cluster
        self._flavor = flavor
        self._sync = sync  # the near-cache's barrier (api/tracking.py), when there is one
        self.state: GtidState | None = None
        self._raw: bytes | None = None
        self._changed: asyncio.Future[None] | None = None
        self._waiters = 0
        self._waited_at = 0.0
        self._subscribed = False
        self._subscriber: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._conn: RespConnection | None = None
        # the near-cache: every invalidation up to ``synced`` has been heard by this worker
        self.synced: GtidState | None = None
        self._barrier: tuple[GtidState, asyncio.Future[None]] | None = None

    def covers(self, need: GtidState) -> bool:
        state = self.state
        return state is not None and state.covers(need)

    async def reach(self, need: GtidState, timeout_s: float) -> bool:
        """True once the invalidator has applied ``need`` (at once when known), False when it
        has not within ``timeout_s``.  Raises RedisError when Redis cannot say."""
        if self.covers(need):
            return True
        await self.refresh()
        if self.covers(need):
            return True
        started = time.monotonic()
        deadline = started + timeout_s
        self._waiters += 1
        self._waited_at = started
        self._start()
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                changed = self._changed
                if changed is None:
                    changed = self._changed = asyncio.get_running_loop().create_future()
                try:
                    await asyncio.wait_for(asyncio.shield(changed), remaining)
                except TimeoutError:
                    break
                if self.covers(need):
                    MIN_GTID_WAITS.labels("ok").inc()
                    FRESHNESS_WAIT_SECONDS.labels("min_gtid").observe(time.monotonic() - started)
                    return True
        finally:
            self._waiters -= 1
            self._waited_at = time.monotonic()
        MIN_GTID_WAITS.labels("timeout").inc()
        FRESHNESS_WAIT_SECONDS.labels("min_gtid").observe(time.monotonic() - started)
        return False

    async def near_synced(self, need: GtidState) -> None:
        """Return once this worker's near-cache has heard every invalidation up to ``need``
        (which must be applied): a round trip on its tracking connection(s) begun after the
        applied state covering ``need`` was read, shared by the requests it serves."""
        if self._sync is None or (self.synced is not None and self.synced.covers(need)):
            return
        barrier = self._barrier
        if barrier is None or not barrier[0].covers(need):
            assert self.state is not None
            barrier = self._barrier = (self.state, asyncio.ensure_future(self._sync()))
        await asyncio.shield(barrier[1])
        state = barrier[0]
        self.synced = state if self.synced is None else self.synced.merge(state)
        if self._barrier is barrier:
            self._barrier = None

    async def refresh(self) -> None:
        self._update(await self._lean.get(self.key))

    def _update(self, raw: bytes | None) -> None:
        """A state read or heard.  Only ever forward: a published state and a GET's reply
        travel on different connections, and an older one may arrive second."""
        flavor = self._flavor()
        if raw is None or raw == self._raw or flavor is None:
            return
        try:
            state = _parse(flavor, raw.decode("ascii"))
        except (UnicodeDecodeError, GtidError):
            return
        if self.state is not None:
            if self.state.covers(state):
                return
            state = self.state.merge(state)
        self._raw, self.state = raw, state
        changed, self._changed = self._changed, None
        if changed is not None and not changed.done():
            changed.set_result(None)

    # ------------------------------------------------- subscription and polling

    def _start(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.ensure_future(self._poll())
        if self._subscriber is None or self._subscriber.done():
            self._subscriber = asyncio.ensure_future(self._subscribe())

    async def _poll(self) -> None:
        while self._waiters:
            await asyncio.sleep(POLL_SUBSCRIBED_S if self._subscribed else POLL_S)
            await self._refresh_quietly()

    async def _subscribe(self) -> None:
        backoff = Backoff(0.05, RETRY_MAX_S)
        command = pack("SSUBSCRIBE" if self._cluster else "SUBSCRIBE", self.key)
        while self._waiters or time.monotonic() - self._waited_at < IDLE_S:
            try:
                settings = await self._locate()
                if settings is None:
                    raise RedisError("the channel's primary is not known yet")
                conn = self._conn = await open_connection(
                    settings, name="cachetail-api-applied", resp3=True, on_push=self._on_push)
            except (RedisError, OSError) as exc:
                log.debug("cannot subscribe to the invalidator's applied state (%s); polling", exc)
                await backoff.sleep()
                continue
            conn.send_only(command)  # confirmed by a push (RESP3)
            try:
                while (self._waiters or time.monotonic() - self._waited_at < IDLE_S) and conn.is_open:
                    await asyncio.wait({conn.closed}, timeout=IDLE_S)
            finally:
                self._subscribed = False
                self._conn = None
                conn.close()
            backoff.reset()
        self._subscriber = None

    def _on_push(self, push: list[Any]) -> None:
        kind = push[0]
        if kind in (b"message", b"smessage") and len(push) >= 3:
            self._update(push[2])
        elif kind in (b"subscribe", b"ssubscribe"):
            self._subscribed = True
            # published before we were subscribed is not heard: read it once now
            asyncio.ensure_future(self._refresh_quietly())
        elif kind == b"sunsubscribe" and self._conn is not None:  # the slot moved: subscribe again
            self._conn.close()

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh()
        except RedisError:
            pass

    async def close(self) -> None:
        for task in (self._poller, self._subscriber):
            if task is not None:
                task.cancel()
        if self._conn is not None:
            self._conn.close()


def cluster_locator(cluster_lean: Any, key: str) -> Locate:
    """On a cluster: the settings of the primary serving ``key``'s slot, from the hot reads'
    slot map (loaded first when needed)."""
    slot = key_slot(key)

    async def locate() -> RedisSettings | None:
        topology = cluster_lean.topology or await cluster_lean.refresh()
        owner = topology.owners()[slot]
        return None if owner is None else cluster_lean.primary_settings(owner)

    return locate
