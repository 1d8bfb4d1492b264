"""The API's Redis client, and a guard that bounds every call and trips a circuit breaker.

A dead Redis must not cost every request a timeout: after a connection failure
the guard skips Redis for ``open_s`` seconds and callers answer from MySQL.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.asyncio import BlockingConnectionPool, Connection, Redis, RedisCluster, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from cachetail.settings import RedisSettings
from metrics.api import REDIS_ERRORS, REDIS_SKIPPED

T = TypeVar("T")
log = logging.getLogger("api")
_LOG_EVERY_S = 10.0

# BlockingConnectionPool's message when no connection freed up in time: a busy
# worker, not a dead server, so it must not trip the breaker.
_POOL_EXHAUSTED = "No connection available."


# What a failed Redis call raises (redis-py's errors, a socket's, a timeout).
REDIS_FAILURES = (RedisError, OSError, asyncio.TimeoutError)


class RedisUnavailable(Exception):
    """A Redis call failed, timed out or was skipped by the open breaker."""

    def __init__(self, operation: str, error_class: str) -> None:
        self.operation = operation
        self.error_class = error_class
        super().__init__(f"redis {operation}: {error_class}")


def build_client(settings: RedisSettings) -> Redis | RedisCluster:
    """A client on a bounded pool: waiting for a connection is bounded by the socket timeout.

    With ``REDIS_CLUSTER=1`` it is redis-py's cluster client: every key, script and
    MGET of ours touches one hash slot, so nothing else changes.  It follows
    MOVED/ASK and refreshes the slot map itself; a failed node costs a bounded
    number of attempts, then the guard answers from MySQL.
    """
    if settings.cluster:
        return RedisCluster(
            ssl=settings.tls,
            max_connections=settings.max_connections,  # per node
            # one more attempt: it follows a MOVED after a failover or a reshard
            retry=Retry(NoBackoff(), 1),
            **settings.client_kwargs(),  # type: ignore[arg-type]  # client_kwargs() is a dict of this constructor's keywords, which ** cannot type
        )
    pool = BlockingConnectionPool(
        connection_class=SSLConnection if settings.tls else Connection,
        max_connections=settings.max_connections,
        timeout=settings.socket_timeout_s,
        retry=Retry(NoBackoff(), 0),  # no hidden retries: a failure is answered from MySQL
        **settings.client_kwargs(),  # type: ignore[arg-type]  # client_kwargs() is a dict of this constructor's keywords, which ** cannot type
    )
    return Redis(connection_pool=pool)


class Breaker:
    def __init__(self, open_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.open_s = open_s
        self._clock = clock
        self._open_until = 0.0

    @property
    def is_open(self) -> bool:
        return self._clock() < self._open_until

    def trip(self) -> None:
        if self.open_s > 0:
            self._open_until = self._clock() + self.open_s

    def reset(self) -> None:
        self._open_until = 0.0


class Guard:
    """Runs Redis calls: counts failures, trips the breaker, raises :class:`RedisUnavailable`.

    ``limit``: at most this many calls at once, each waiting at most ``wait_s`` for
    its turn.  The cluster client needs it: past its per-node connection limit it
    raises at once where the single-node pool (a BlockingConnectionPool) waits.
    Calls on the lean connections (``bounded=False``) hold no pooled connection
    and skip it.
    """

    def __init__(self, breaker: Breaker, limit: int | None = None, wait_s: float = 0.25) -> None:
        self.breaker = breaker
        self._logged_at = float("-inf")
        self._slots = asyncio.Semaphore(limit) if limit else None
        self._wait_s = wait_s

    async def run(self, operation: str, call: Callable[[], Awaitable[T]], *,
                  probe: bool = False, bounded: bool = True) -> T:
        if self.breaker.is_open and not probe:
            raise self.skipped(operation)
        if self._slots is None or not bounded:
            return await self._call(operation, call, probe)
        if self._slots.locked():
            try:
                await asyncio.wait_for(self._slots.acquire(), self._wait_s)
            except TimeoutError:  # a busy worker, not a dead server: no breaker trip
                REDIS_ERRORS.labels(operation).inc()
                raise RedisUnavailable(operation, "PoolExhausted") from None
        else:
            await self._slots.acquire()  # free: no wait, no timeout scope
        try:
            return await self._call(operation, call, probe)
        finally:
            self._slots.release()

    def skipped(self, operation: str) -> RedisUnavailable:
        """The breaker is open: count the call skipped; what to raise."""
        REDIS_SKIPPED.labels(operation).inc()
        return RedisUnavailable(operation, "CircuitOpen")

    async def _call(self, operation: str, call: Callable[[], Awaitable[T]], probe: bool) -> T:
        try:
            result = await call()
        except REDIS_FAILURES as exc:
            raise self.failed(operation, exc) from None
        if probe and self.breaker.is_open:
            self.breaker.reset()
            log.warning("Redis answers again; the breaker is closed")
        return result

    def failed(self, operation: str, exc: BaseException) -> RedisUnavailable:
        """Count, trip the breaker on an outage, log (once per interval): what to raise."""
        REDIS_ERRORS.labels(operation).inc()
        if _is_outage(exc):
            self.breaker.trip()
        self._log(operation, exc)
        return RedisUnavailable(operation, type(exc).__name__)

    def _log(self, operation: str, exc: BaseException) -> None:
        # An outage fails every request: one line per interval, not one per request.
        now = time.monotonic()
        if now - self._logged_at >= _LOG_EVERY_S:
            self._logged_at = now
            log.warning("Redis %s failed (%s: %s); answering from MySQL, skipping Redis for %.1f s",
                        operation, type(exc).__name__, exc, self.breaker.open_s)


def _is_outage(exc: BaseException) -> bool:
    if isinstance(exc, MaxConnectionsError) or (
            isinstance(exc, RedisConnectionError) and str(exc) == _POOL_EXHAUSTED):
        return False
    return isinstance(exc, (RedisConnectionError, RedisTimeoutError, OSError, asyncio.TimeoutError))
