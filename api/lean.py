"""A lean path to Redis for the hot reads: one pipelined connection per worker.

Profiled on a warm GET (docs/probes.md, redis_get_profile), redis.asyncio spends
most of its time around the command, not in it: taking and giving back a pool
connection under a lock, two ``asyncio.timeout`` scopes, retry and event
dispatch wrappers, observability hooks, packing through a generic encoder.
Here every concurrent caller adds its command to the same socket's buffer and
waits on a future; the buffer goes out in one write at the loop's next turn
(at once when the connection was idle), replies come back in order and resolve the futures from one
``data_received`` (hiredis parses them).  Redis sees pipelined commands, the
event loop sees one socket.

:class:`RespConnection` also speaks RESP3: pushes (client-tracking
invalidations) go to ``on_push``.  Failures raise redis-py's own exceptions
(``ConnectionError``, ``TimeoutError``, ``ResponseError``), so the API's
:class:`~api.redisconn.Guard` and breaker treat this path as they treat redis-py.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from cachetail.settings import RedisSettings

PushHandler = Callable[[list[Any]], None]
LostHandler = Callable[[BaseException], None]


def pack(*args: bytes | str | int) -> bytes:
    """One command in RESP (hiredis packs it, in C)."""
    return hiredis.pack_command(args)  # type: ignore[arg-type,no-any-return]  # hiredis's stub: a 1-tuple, no return type


def tls_context() -> ssl.SSLContext:
    """What redis-py's SSLConnection uses by default: the system CAs, hostname checked."""
    return ssl.create_default_context()


class RespConnection(asyncio.Protocol):
    """Pipelined RESP over one socket: replies resolve futures in order.

    A reply that has not come ``timeout_s`` after its command was written ends
    the connection (every waiter fails with TimeoutError): replies are in order,
    so nothing behind it can arrive either.
    """

    def __init__(self, timeout_s: float, on_push: PushHandler | None = None,
                 on_lost: LostHandler | None = None) -> None:
        self._timeout_s = timeout_s
        self._on_push = on_push
        self._on_lost = on_lost
        self._reader = hiredis.Reader()
        self._waiting: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._error: BaseException | None = None
        self._corked: list[bytes] = []
        self.closed: asyncio.Future[None] = self._loop.create_future()

    @property
    def is_open(self) -> bool:
        return self._error is None and self._transport is not None

    # ---------------------------------------------------------------- protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass of it

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        try:
            while (reply := self._reader.gets()) is not False:
                if type(reply) is hiredis.PushNotification:
                    if self._on_push is not None:
                        self._on_push(reply)
                    continue
                future, _ = self._waiting.popleft()
                if future.done():  # its caller was cancelled; the reply is still consumed in order
                    continue
                if type(reply) is hiredis.ReplyError:
                    future.set_exception(ResponseError(str(reply)))
                else:
                    future.set_result(reply)
        except (hiredis.ProtocolError, IndexError) as exc:
            self.abort(RedisConnectionError(f"Redis protocol error: {exc}"))

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(self._error or RedisConnectionError(
            "Connection closed by server." if exc is None else f"Connection lost: {exc}"))

    # ----------------------------------------------------------------- calls

    def call(self, payload: bytes) -> asyncio.Future[Any]:
        """Write one command; the future resolves to its reply."""
        future = self._loop.create_future()
        self._send(payload, (future,))
        return future

    def call2(self, payload: bytes) -> tuple[asyncio.Future[Any], asyncio.Future[Any]]:
        """Write two commands at once (``payload`` holds both); their replies' futures."""
        first, second = self._loop.create_future(), self._loop.create_future()
        self._send(payload, (first, second))
        return first, second

    def calln(self, payload: bytes, n: int) -> tuple[asyncio.Future[Any], ...]:
        """Write ``n`` commands at once (``payload`` holds them all); their replies' futures."""
        futures = tuple(self._loop.create_future() for _ in range(n))
        self._send(payload, futures)
        return futures

    def send_only(self, payload: bytes) -> None:
        """Write a command whose answer comes as a push, not a reply (SUBSCRIBE on RESP3)."""
        self._send(payload, ())

    def _send(self, payload: bytes, futures: tuple[asyncio.Future[Any], ...]) -> None:
        if self._error is not None or self._transport is None:
            error = self._error or RedisConnectionError("Connection not open.")
            for future in futures:
                future.set_exception(error)
                future.exception()  # a pipelined caller may never await this one
            return
        now = self._loop.time()
        for future in futures:
            self._waiting.append((future, now))
        if self._corked:
            self._corked.append(payload)
        elif len(self._waiting) == len(futures):  # an idle connection: nothing to batch with
            self._transport.write(payload)
        else:
            self._corked.append(payload)
            self._loop.call_soon(self._flush)
        if self._timer is None:
            self._timer = self._loop.call_at(now + self._timeout_s, self._check_timeout)

    def _flush(self) -> None:
        """Every command written in this turn of the loop, in one write (one syscall, and
        one read for Redis): with 32 callers a third of the cost of a write per command."""
        out, self._corked = self._corked, []
        if self._transport is not None and self._error is None:
            self._transport.write(b"".join(out))

    def _check_timeout(self) -> None:
        self._timer = None
        if not self._waiting:
            return
        due = self._waiting[0][1] + self._timeout_s
        if self._loop.time() >= due:
            self.abort(RedisTimeoutError("Timeout reading from Redis"))
        else:
            self._timer = self._loop.call_at(due, self._check_timeout)

    # --------------------------------------------------------------- closing

    def abort(self, error: BaseException) -> None:
        """Fail every waiter with ``error`` and drop the socket at once."""
        self._fail(error)
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        self.abort(RedisConnectionError("Connection closed."))

    def _fail(self, error: BaseException) -> None:
        first = self._error is None
        if first:
            self._error = error
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiting:
            future, _ = self._waiting.popleft()
            if not future.done():
                future.set_exception(self._error or error)
                future.exception()  # a waiter may be gone: never "exception never retrieved"
        if first:
            if not self.closed.done():
                self.closed.set_result(None)
            if self._on_lost is not None:
                self._on_lost(error)


async def open_connection(settings: RedisSettings, *, name: str, resp3: bool = False,
                          on_push: PushHandler | None = None,
                          on_lost: LostHandler | None = None,
                          setup: tuple[bytes, ...] = ()) -> RespConnection:
    """Connect, authenticate, select the database, send ``setup``, name the client; all
    bounded by the connect timeout (each later reply: the socket timeout).  Raises
    redis-py's ConnectionError/TimeoutError.  The name only helps operators (CLIENT
    LIST): an ACL that refuses CLIENT SETNAME is no error."""
    loop = asyncio.get_running_loop()
    timeout = settings.socket_timeout_s
    conn: RespConnection | None = None

    async def establish() -> RespConnection:
        nonlocal conn
        _, conn = await loop.create_connection(
            lambda: RespConnection(timeout, on_push, on_lost), settings.host, settings.port,
            ssl=tls_context() if settings.tls else None,
            server_hostname=settings.host if settings.tls else None)
        commands = _handshake(settings, resp3) + setup
        replies = await asyncio.gather(*(conn.call(command) for command in commands),
                                       conn.call(pack("CLIENT", "SETNAME", name)),
                                       return_exceptions=True)
        for reply in replies[:-1]:
            if isinstance(reply, ResponseError):  # WRONGPASS, NOPERM...: this server cannot be used
                raise RedisConnectionError(f"Redis refused the connection setup: {reply}")
            if isinstance(reply, BaseException):
                raise reply
        named = replies[-1]
        if isinstance(named, ResponseError) and str(named).startswith(("NOAUTH", "WRONGPASS")):
            raise RedisConnectionError(f"Redis refused the connection setup: {named}")
        if isinstance(named, BaseException) and not isinstance(named, ResponseError):
            raise named
        return conn

    try:
        return await asyncio.wait_for(establish(), settings.connect_timeout_s)
    except TimeoutError:
        if conn is not None:
            conn.abort(RedisTimeoutError("Timeout connecting to Redis"))
        raise RedisTimeoutError(
            f"Timeout connecting to {settings.host}:{settings.port}") from None
    except OSError as exc:
        raise RedisConnectionError(
            f"Error connecting to {settings.host}:{settings.port}: {exc.strerror or exc}") from None
    except BaseException:
        if conn is not None:
            conn.close()
        raise


def _handshake(settings: RedisSettings, resp3: bool) -> tuple[bytes, ...]:
    password = settings.password.reveal() if settings.password else None
    commands = []
    if resp3:
        hello: list[bytes | str | int] = ["HELLO", 3]
        if password is not None:
            hello += ["AUTH", settings.username or "default", password]
        commands.append(pack(*hello))
    elif password is not None:
        auth = ("AUTH", settings.username, password) if settings.username else ("AUTH", password)
        commands.append(pack(*auth))
    if settings.db:
        commands.append(pack("SELECT", settings.db))
    return tuple(commands)


@dataclass(frozen=True)
class Script:
    """A Lua script as the lean connections run it: EVALSHA, and EVAL once after a NOSCRIPT."""

    text: str
    sha: str

    @classmethod
    def of(cls, text: str) -> Script:
        return cls(text, hashlib.sha1(text.encode()).hexdigest())  # noqa: S324 - Redis names scripts so


async def run_script(reads: HotReads, script: Script, keys: Sequence[str], args: Sequence[bytes | str | int]
                     ) -> Any:
    """``script`` on ``keys`` (one slot) over a lean connection."""
    try:
        return await reads.command(keys[0], "EVALSHA", script.sha, len(keys), *keys, *args)
    except ResponseError as exc:
        if not str(exc).startswith("NOSCRIPT"):
            raise
        return await reads.command(keys[0], "EVAL", script.text, len(keys), *keys, *args)


class HotReads(Protocol):
    """What the cache reads through: :class:`LeanRedis`, or on a cluster ``ClusterLean``."""

    def get(self, key: str) -> Awaitable[bytes | None]: ...

    def command(self, key: str, *args: bytes | str | int) -> Awaitable[Any]:
        """One command, sent where ``key`` lives."""

    async def get_with_pttl(self, key: str) -> tuple[bytes | None, int]: ...

    def mget(self, *keys: str) -> Awaitable[list[bytes | None]]: ...

    async def close(self) -> None: ...


_GET = b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n"
_GET_PTTL = _GET + b"*2\r\n$4\r\nPTTL\r\n$%d\r\n%s\r\n"


class LeanRedis:
    """The worker's one connection for hot reads, opened on first use and after a loss.

    Concurrent callers share it (their commands are pipelined) and share a
    reconnect; everything else goes through redis-py.
    """

    def __init__(self, settings: RedisSettings, name: str = "cachetail-api") -> None:
        self._settings = settings
        self._name = name
        self._conn: RespConnection | None = None
        self._connecting: asyncio.Task[RespConnection] | None = None
        self._closed = False

    def get(self, key: str) -> Awaitable[bytes | None]:
        """GET ``key``: the reply's future itself while the connection is open (the hot
        read's way: no coroutine of its own), else a coroutine that connects first."""
        conn = self._conn
        if conn is None or not conn.is_open:
            return self._get_connecting(key)
        raw = key.encode()
        return conn.call(_GET % (len(raw), raw))

    def command(self, key: str, *args: bytes | str | int) -> Awaitable[Any]:
        """One command (a lease, a compare-and-set store): its reply's future while the
        connection is open; pipelined with the others, as the reads are."""
        conn = self._conn
        if conn is None or not conn.is_open:
            return self._command_connecting(pack(*args))
        return conn.call(pack(*args))

    async def _command_connecting(self, payload: bytes) -> Any:
        conn = await self.connect()
        return await conn.call(payload)

    async def _get_connecting(self, key: str) -> bytes | None:
        conn = await self.connect()
        raw = key.encode()
        result: bytes | None = await conn.call(_GET % (len(raw), raw))
        return result

    async def get_with_pttl(self, key: str) -> tuple[bytes | None, int]:
        """GET and PTTL written together: the value and its remaining life in ms
        (-1 no expiry, -2 gone by the time PTTL ran)."""
        conn = self._conn
        if conn is None or not conn.is_open:
            conn = await self.connect()
        raw = key.encode()
        value, pttl = conn.call2(_GET_PTTL % (len(raw), raw, len(raw), raw))
        return await value, await pttl

    async def mget(self, *keys: str) -> list[bytes | None]:
        conn = self._conn
        if conn is None or not conn.is_open:
            conn = await self.connect()
        values: list[bytes | None] = await conn.call(pack("MGET", *keys))
        return values

    def ready(self) -> RespConnection | None:
        """The open connection, or None when a call would have to connect first."""
        conn = self._conn
        return conn if conn is not None and conn.is_open else None

    async def connect(self) -> RespConnection:
        """The open connection, opening it when needed (callers share one attempt)."""
        if self._closed:
            raise RedisConnectionError("Client closed.")
        conn = self._conn
        if conn is not None and conn.is_open:
            return conn
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(
                open_connection(self._settings, name=self._name))
            self._connecting.add_done_callback(self._connected)
        # shielded: a cancelled caller (client gone) must not cancel the others' connect
        return await asyncio.shield(self._connecting)

    def _connected(self, task: asyncio.Task[RespConnection]) -> None:
        self._connecting = None
        if task.cancelled() or task.exception() is not None:
            return
        conn = task.result()
        if self._closed:
            conn.close()
        else:
            self._conn = conn

    async def close(self) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
