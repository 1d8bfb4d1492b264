"""The near-cache: users in the worker's own memory, served only while Redis has
promised to say when they change.

Redis keeps that promise through client tracking (:mod:`api.tracking`): every
change of a key under the users prefix — the invalidator's DEL or refresh, a
fill's lease and store, ``POST /cache/clear``, expiry, eviction — is announced
on the worker's invalidation connection, and FLUSHALL/FLUSHDB as "everything".
The near-cache is *live* only while that connection is up and answering;
losing it empties the near-cache at once, and it is bypassed until tracking is
established again.

The race every client-side cache must close: a GET's reply and the invalidation
of the same key travel on different connections and can cross, so the reply
may carry the old value *after* its invalidation was applied — stored then, it
would stay until the next change.  A read therefore takes a ticket
(:meth:`NearCache.begin`) before its GET is written; an invalidation of that
key, a flush or a loss of tracking before :meth:`NearCache.finish` voids the
ticket, and the reply is answered but not kept.

What is kept: user values and "no such user" entries, for no longer than the
TTL Redis reported with them (so a near-cache never outlives Redis's copy even
when nothing touches the key there).  Leases are never kept.  Product lists are
not near-cached: they are valid only together with the generation key, they are
large, and a hit on them costs the transfer, not the client.
"""

from __future__ import annotations

import collections
import math
import sys
import time
from collections.abc import Callable, Sequence

from cachetail.keyspace import LEASE
from metrics.api import (
    HOT,
    NEARCACHE_BYTES,
    NEARCACHE_ENTRIES,
    NEARCACHE_EVICTIONS,
    NEARCACHE_FILLS,
    NEARCACHE_INVALIDATIONS,
    NEARCACHE_LOOKUPS,
    NEARCACHE_RESETS,
    NEARCACHE_TRACKING,
)

# What an entry costs beyond its key and value objects: the OrderedDict's slot and
# link node, and the (value, expiry, size) tuple with its float.  Measured with
# tracemalloc on CPython 3.11 (tests/test_api_nearcache.py checks it still holds).
ENTRY_OVERHEAD = 240

# Sequence of invalidated keys (bytes), or None for "everything" (a flush).
Observer = Callable[[Sequence[bytes] | None], None]


class _Pending:
    """Reads of one key in flight, and how many invalidations of it arrived so far."""

    __slots__ = ("readers", "generation")

    def __init__(self) -> None:
        self.readers = 0
        self.generation = 0


class Ticket:
    __slots__ = ("key", "pending", "generation", "epoch")

    def __init__(self, key: str, pending: _Pending, epoch: int) -> None:
        self.key = key
        self.pending = pending
        self.generation = pending.generation
        self.epoch = epoch


class NearCache:
    """Bounded by entries and bytes (least recently used goes first); one event loop, no locks."""

    def __init__(self, max_entries: int, max_bytes: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.live = False
        # A measurement seam: called after each invalidation message was applied.
        self.on_invalidated: Observer | None = None
        self._clock = clock
        self._entries: collections.OrderedDict[str, tuple[bytes, float, int]] = \
            collections.OrderedDict()
        self._pending: dict[str, _Pending] = {}
        self._bytes = 0
        self._epoch = 0
        self._hit, self._miss, self._bypass = (HOT.counter(NEARCACHE_LOOKUPS.labels(r))
                                               for r in ("hit", "miss", "bypass"))
        self._stored, self._raced, self._too_large = (NEARCACHE_FILLS.labels(r)
                                                      for r in ("stored", "invalidated", "too_large"))
        self._capacity, self._expired = (NEARCACHE_EVICTIONS.labels(r)
                                         for r in ("capacity", "expired"))
        self._publish()

    @property
    def entries(self) -> int:
        return len(self._entries)

    @property
    def held_bytes(self) -> int:
        return self._bytes

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    # ------------------------------------------------------------------ reads

    def get(self, key: str) -> bytes | None:
        """The stored value (a user's JSON or the negative marker), or None."""
        entry = self._entries.get(key)
        if entry is None:
            (self._miss if self.live else self._bypass).inc()
            return None
        if entry[1] <= self._clock():
            self._remove(key)
            self._expired.inc()
            self._miss.inc()
            self._publish()
            return None
        self._entries.move_to_end(key)
        self._hit.inc()
        return entry[0]

    def begin(self, key: str) -> Ticket | None:
        """Before a GET of ``key`` is written: a ticket to keep its reply, None when not live."""
        if not self.live:
            return None
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending()
        pending.readers += 1
        return Ticket(key, pending, self._epoch)

    def finish(self, ticket: Ticket, value: bytes | None, pttl_ms: int) -> None:
        """After the GET (failed or not): keep ``value`` for ``pttl_ms`` (-1: no expiry)
        unless the ticket was voided meanwhile.  Must be called once per ticket."""
        pending, key = ticket.pending, ticket.key
        pending.readers -= 1
        if pending.readers == 0 and self._pending.get(key) is pending:
            del self._pending[key]
        if value is None or value[:1] == LEASE or pttl_ms == 0 or pttl_ms < -1:
            return  # nothing to keep: absent, a fill in progress, or gone by the PTTL
        if not self.live or ticket.epoch != self._epoch or pending.generation != ticket.generation:
            self._raced.inc()
            return
        size = sys.getsizeof(key) + sys.getsizeof(value) + ENTRY_OVERHEAD
        if size > self.max_bytes:
            self._too_large.inc()
            return
        self._remove(key)
        expires = math.inf if pttl_ms == -1 else self._clock() + pttl_ms / 1000
        self._entries[key] = (value, expires, size)
        self._bytes += size
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            _, (_, _, dropped) = self._entries.popitem(last=False)
            self._bytes -= dropped
            self._capacity.inc()
        self._stored.inc()
        self._publish()

    # ---------------------------------------------------------- invalidation

    def invalidate(self, keys: Sequence[bytes]) -> None:
        """Redis announced a change of these keys."""
        NEARCACHE_INVALIDATIONS.inc(len(keys))
        entries, pending = self._entries, self._pending
        if entries or pending:
            held = len(entries)
            for raw in keys:
                key = raw.decode("utf-8", "replace")
                if key in entries:
                    self._remove(key)
                reading = pending.get(key)
                if reading is not None:
                    reading.generation += 1
            if len(entries) != held:
                self._publish()
        if self.on_invalidated is not None:
            self.on_invalidated(keys)

    def flush(self) -> None:
        """Redis announced that every key may have changed (FLUSHALL, FLUSHDB)."""
        self._epoch += 1
        self._clear()
        NEARCACHE_RESETS.labels("flush").inc()
        if self.on_invalidated is not None:
            self.on_invalidated(None)

    def enable(self) -> None:
        """Tracking is established: from now on every change will be announced."""
        self._epoch += 1
        self.live = True
        NEARCACHE_TRACKING.set(1)

    def disable(self, reason: str) -> None:
        """The promise is broken or unknown: empty, void every read in flight, bypass."""
        was_live = self.live
        self._off()
        if was_live:
            NEARCACHE_RESETS.labels(reason).inc()

    def close(self) -> None:
        """The worker stops: empty and off, which is no reset worth counting."""
        self._off()

    def _off(self) -> None:
        self.live = False
        self._epoch += 1
        self._clear()
        NEARCACHE_TRACKING.set(0)

    # ---------------------------------------------------------------- common

    def _remove(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry[2]

    def _clear(self) -> None:
        self._entries.clear()
        self._bytes = 0
        self._publish()

    def _publish(self) -> None:
        NEARCACHE_ENTRIES.set(len(self._entries))
        NEARCACHE_BYTES.set(self._bytes)
