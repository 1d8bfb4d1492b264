"""The load generator: keep-alive HTTP/1.1 over raw asyncio streams, in several processes.

Each worker process runs ``connections`` closed-loop clients (one request in flight per
connection), picks its paths from a :class:`Mix`, and returns one row per request as
columns: start (CLOCK_MONOTONIC, shared by every process on Linux), latency, status,
the X-Cache header's first letter and the request's kind.  Its own CPU time comes back
too, so the caller can tell whether the client, not the server, was the bottleneck.
:func:`ceiling` measures what this client can drive at all, against a null HTTP server.
"""

from __future__ import annotations

import asyncio
import bisect
import multiprocessing as mp
import random
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from bench.httpclient import Connection, HttpError

KINDS: tuple[str, ...] = ("user", "nocache", "products", "products_category", "health", "other")
KIND_INDEX = {k: i for i, k in enumerate(KINDS)}
CATEGORIES: tuple[str, ...] = ("electronics", "books", "clothing", "home", "garden", "sports",
                               "toys", "grocery", "beauty", "automotive")


# ------------------------------------------------------------------ what to request


@dataclass(frozen=True)
class Mix:
    """What a worker requests.  ``paths`` (with ``kinds``) cycles through a fixed list;
    otherwise user ids are drawn Zipf(``zipf_s``) over 1..``users`` (rank -> id through a
    fixed permutation, so hot ids are spread), with a share of product-list reads, half
    of them with a category.  ``nocache`` reads /user/{id}/nocache instead."""

    paths: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    users: int = 10_000
    zipf_s: float = 1.0
    products_share: float = 0.0
    nocache: bool = False
    seed: int = 1

    def picker(self, stream: int) -> Callable[[], tuple[str, int]]:
        rng = random.Random(self.seed * 1_000_003 + stream)
        if self.paths:
            kinds = [KIND_INDEX.get(k, KIND_INDEX["other"]) for k in (self.kinds or ())]
            n = len(self.paths)
            i = rng.randrange(n)

            def from_list() -> tuple[str, int]:
                nonlocal i
                i = (i + 1) % n
                return self.paths[i], (kinds[i] if kinds else KIND_INDEX["other"])
            return from_list
        cum = zipf_cumulative(self.users, self.zipf_s)
        ids = zipf_ids(self.users, self.seed)
        total = cum[-1]
        user_kind = KIND_INDEX["nocache" if self.nocache else "user"]
        suffix = "/nocache" if self.nocache else ""

        def mixed() -> tuple[str, int]:
            if self.products_share and rng.random() < self.products_share:
                if rng.random() < 0.5:
                    return "/products", KIND_INDEX["products"]
                return f"/products?category={rng.choice(CATEGORIES)}", KIND_INDEX["products_category"]
            rank = bisect.bisect_left(cum, rng.random() * total)
            return f"/user/{ids[min(rank, len(ids) - 1)]}{suffix}", user_kind
        return mixed


def zipf_cumulative(n: int, s: float) -> list[float]:
    """Cumulative weights of ranks 1..n under Zipf(s): weight(k) = 1 / k**s."""
    out, acc = [], 0.0
    for k in range(1, n + 1):
        acc += 1.0 / k**s
        out.append(acc)
    return out


def zipf_ids(n: int, seed: int) -> list[int]:
    """The id of each rank: a fixed permutation of 1..n."""
    ids = list(range(1, n + 1))
    random.Random(seed).shuffle(ids)
    return ids


# ------------------------------------------------------------------ results


@dataclass
class Samples:
    """One row per request, as columns (cheap to pickle between processes)."""

    start: array = field(default_factory=lambda: array("d"))
    latency: array = field(default_factory=lambda: array("d"))
    status: array = field(default_factory=lambda: array("H"))
    kind: array = field(default_factory=lambda: array("B"))
    cache: bytearray = field(default_factory=bytearray)
    errors: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    processes: int = 0
    connections: int = 0

    def add(self, start: float, latency: float, status: int, cache: str, kind: int) -> None:
        self.start.append(start)
        self.latency.append(latency)
        self.status.append(status)
        self.kind.append(kind)
        self.cache.append(ord(cache[0]) if cache else 45)  # "-" when absent

    def extend(self, other: Samples) -> None:
        self.start.extend(other.start)
        self.latency.extend(other.latency)
        self.status.extend(other.status)
        self.kind.extend(other.kind)
        self.cache.extend(other.cache)
        self.errors += other.errors
        self.cpu_s += other.cpu_s
        self.wall_s = max(self.wall_s, other.wall_s)
        self.processes += other.processes
        self.connections += other.connections

    def __len__(self) -> int:
        return len(self.latency)

    def select(self, kind: str | None = None, status: int | None = None) -> list[float]:
        k = None if kind is None else KIND_INDEX[kind]
        return [lat for lat, kk, st in zip(self.latency, self.kind, self.status, strict=True)
                if (k is None or kk == k) and (status is None or st == status)]

    def cache_counts(self) -> dict[str, int]:
        names = {ord("H"): "hit", ord("M"): "miss", ord("B"): "bypass"}
        out = {"hit": 0, "miss": 0, "bypass": 0, "none": 0}
        for c in self.cache:
            out[names.get(c, "none")] += 1
        return out

    def status_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for st in self.status:
            out[str(st)] = out.get(str(st), 0) + 1
        return out

    def client_cpu_share(self) -> float | None:
        """The client's CPU time over the time its processes could have used (1.0 = saturated)."""
        if not self.wall_s or not self.processes:
            return None
        return self.cpu_s / (self.wall_s * self.processes)


# ------------------------------------------------------------------ worker processes


async def _run(host: str, port: int, mix: Mix, stream: int, connections: int,
               duration_s: float, ready: Callable[[], float], stop: Any = None) -> Samples:
    conns = [Connection(host, port) for _ in range(connections)]
    await asyncio.gather(*(c.open() for c in conns))
    start_at = ready()  # blocks until every process is connected and the start is set
    samples = Samples(processes=1, connections=connections)
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    deadline = [start_at + duration_s]
    cpu0 = time.process_time()

    async def watch_stop() -> None:  # the parent may end the phase early (steady state)
        while stop is not None and time.monotonic() < deadline[0]:
            if stop.is_set():
                deadline[0] = time.monotonic()
                return
            await asyncio.sleep(0.05)
    watcher = asyncio.ensure_future(watch_stop())

    async def client(i: int, conn: Connection) -> None:
        pick = mix.picker(stream * 10_000 + i)
        clock = time.monotonic
        while True:
            t0 = clock()
            if t0 >= deadline[0]:
                return
            path, kind = pick()
            try:
                resp = await conn.get(path)
            except (HttpError, OSError):
                samples.errors += 1
                await asyncio.sleep(0.01)
                continue
            samples.add(t0, clock() - t0, resp.status, resp.cache, kind)

    await asyncio.gather(*(client(i, c) for i, c in enumerate(conns)))
    watcher.cancel()
    samples.cpu_s = time.process_time() - cpu0
    samples.wall_s = time.monotonic() - start_at
    for c in conns:
        await c.close()
    return samples


def _event_loop() -> Callable[[Any], Any]:
    try:
        import uvloop

        return uvloop.run
    except ImportError:
        return asyncio.run


def _worker(pipe: Any, host: str, port: int, mix: Mix, stream: int, connections: int,
            duration_s: float, stop: Any) -> None:
    def ready() -> float:
        pipe.send("ready")
        return float(pipe.recv())

    try:
        pipe.send(_event_loop()(_run(host, port, mix, stream, connections, duration_s, ready, stop)))
    except Exception as exc:  # reported to the parent, which raises it
        pipe.send(RuntimeError(f"load generator: {type(exc).__name__}: {exc}"))


def split(total: int, parts: int) -> list[int]:
    """``total`` spread over ``parts`` as evenly as possible (no zero parts)."""
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run_load(url: str, mix: Mix, *, duration_s: float, connections: int, processes: int,
             on_start: Callable[[float, Any], None] | None = None) -> Samples:
    """Closed-loop load on ``url`` from ``processes`` processes holding ``connections``
    keep-alive connections in all, for ``duration_s``; every process starts at once.
    ``on_start(start_at, stop)`` runs (in this process) once the start is set: setting
    the ``stop`` event ends the phase early."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    ctx = mp.get_context("spawn")
    procs, pipes = [], []
    stop = ctx.Event()
    for stream, conns in enumerate(split(connections, processes)):
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_worker, args=(child, host, port, mix, stream, conns, duration_s, stop),
                        daemon=True)
        p.start()
        procs.append(p)
        pipes.append(parent)
    try:
        for pipe in pipes:
            msg = _recv(pipe, 30)
            if isinstance(msg, Exception):
                raise msg
        start_at = time.monotonic() + 0.05
        for pipe in pipes:
            pipe.send(start_at)
        if on_start:
            on_start(start_at, stop)
        total = Samples()
        for pipe in pipes:
            msg = _recv(pipe, duration_s + 60)
            if isinstance(msg, Exception):
                raise msg
            total.extend(msg)
        return total
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()


def _recv(pipe: Any, timeout_s: float) -> Any:
    if not pipe.poll(timeout_s):
        raise TimeoutError("a load-generator process did not answer")
    try:
        return pipe.recv()
    except EOFError:
        raise RuntimeError("a load-generator process died") from None


# ------------------------------------------------------------------ the client's own ceiling

_NULL_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


class _NullProtocol(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        n = self.buf.count(b"\r\n\r\n")
        if n:
            self.buf = self.buf[self.buf.rfind(b"\r\n\r\n") + 4:]
            self.transport.write(_NULL_RESPONSE * n)


def _null_server(pipe: Any) -> None:
    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_NullProtocol, "127.0.0.1", 0)
        pipe.send(server.sockets[0].getsockname()[1])
        await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
        server.close()
    _event_loop()(main())


def ceiling(*, duration_s: float, connections: int, processes: int) -> Samples:
    """What this client drives against a null HTTP server (one process answering "ok"
    from a raw protocol): the load generator's own ceiling on this machine."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    server = ctx.Process(target=_null_server, args=(child,), daemon=True)
    server.start()
    try:
        port = _recv(parent, 30)
        return run_load(f"http://127.0.0.1:{port}", Mix(paths=("/",), kinds=("other",)),
                        duration_s=duration_s, connections=connections, processes=processes)
    finally:
        try:
            parent.send("stop")
        except OSError:
            pass
        server.join(5)
        if server.is_alive():
            server.kill()
