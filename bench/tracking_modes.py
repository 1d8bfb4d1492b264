"""Issue 7's choice of tracking mode, measured: BCAST + PREFIX against default mode.

Prints figures, asserts nothing.  A throwaway Redis on a free port; every
connection is raw asyncio + hiredis, so what differs is Redis's tracking mode,
not a client library.  For each mode, ``--workers`` near-cache "workers" (one
event loop here) each hold the connections the API would hold:

    bcast    one RESP3 connection: CLIENT TRACKING on BCAST PREFIX <user keys>
    default  one RESP3 invalidation connection, and one RESP2 data connection
             with CLIENT TRACKING on REDIRECT <its id> that reads the keys

and the figures are:

1. delay: a writer DELs a key every worker holds (read once through its data
   connection, in default mode), ``--samples`` times; delay = the invalidation
   reaching the slowest worker - the DEL sent (one process, one clock);
2. the same with ``--churn`` SETs per second of *other* user keys by another
   process (fills and invalidations elsewhere in the keyspace): what each worker
   then receives, and the delay of the probe keys meanwhile;
3. server memory: tracking table and used_memory after every worker read
   ``--keys`` distinct keys (default mode only remembers readers; BCAST nothing).

    .venv/bin/python bench/tracking_modes.py
    .venv/bin/python bench/tracking_modes.py --workers 8 --keys 100000 --churn 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hiredis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from api.lean import pack  # noqa: E402
from bench.stats import percentile  # noqa: E402
from cachetail.devstack import RedisServer  # noqa: E402
from cachetail.keyspace import Keyspace  # noqa: E402

KEYS = Keyspace()
PREFIX = KEYS.user(0)[: KEYS.user(0).index("{") + 3]  # "ct:{u:"


class Conn(asyncio.Protocol):
    """Replies in order; RESP3 pushes to ``on_push`` with their arrival time."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: list[asyncio.Future[Any]] = []
        self.pushes = 0
        self.keys = 0
        self.arrivals: dict[bytes, float] = {}
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            if isinstance(reply, hiredis.PushNotification):
                self.pushes += 1
                for key in reply[1] or ():
                    self.keys += 1
                    self.arrivals.setdefault(key, now)
            else:
                self.waiting.pop(0).set_result(reply)

    def call(self, *args: str | bytes | int) -> asyncio.Future[Any]:
        assert self.transport is not None
        future = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        self.transport.write(pack(*args))
        return future


async def connect(port: int) -> Conn:
    _, conn = await asyncio.get_running_loop().create_connection(Conn, "127.0.0.1", port)
    return conn


async def worker(port: int, mode: str) -> tuple[Conn, Conn | None]:
    """The invalidation connection, and the data connection (default mode)."""
    inval = await connect(port)
    await inval.call("HELLO", 3)
    if mode == "bcast":
        await inval.call("CLIENT", "TRACKING", "on", "BCAST", "PREFIX", PREFIX)
        return inval, None
    data = await connect(port)
    await data.call("CLIENT", "TRACKING", "on", "REDIRECT", await inval.call("CLIENT", "ID"))
    return inval, data


def churn(port: int, rate: int, seconds: float) -> None:
    """Another process SETting other user keys at ``rate`` per second (fills elsewhere)."""
    import redis

    client = redis.Redis(port=port)
    pipe_every, sent, started = 50, 0, time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        if sent < rate * elapsed:
            pipe = client.pipeline(transaction=False)
            for i in range(pipe_every):
                pipe.set(KEYS.user(1_000_000 + (sent + i) % 100_000), b"{}", ex=60)
            pipe.execute()
            sent += pipe_every
        else:
            time.sleep(0.001)


async def delays(port: int, mode: str, workers: int, samples: int, rate: float) -> dict[str, Any]:
    held = [await worker(port, mode) for _ in range(workers)]
    writer = await connect(port)
    gap = 1.0 / rate
    out: list[float] = []
    for i in range(samples):
        key = KEYS.user(5_000_000 + i).encode()
        await writer.call("SET", key, "{}")
        for inval, data in held:
            if data is not None:
                await data.call("GET", key)  # default mode: a worker must have read it
            else:  # BCAST announces the SET too: let it arrive before timing the DEL
                while key not in inval.arrivals:
                    await asyncio.sleep(0)
            inval.arrivals.pop(key, None)
        sent = time.perf_counter()
        await writer.call("DEL", key)
        deadline = sent + 1.0
        while any(key not in inval.arrivals for inval, _ in held) and time.perf_counter() < deadline:
            await asyncio.sleep(0)
        out.append(max(inval.arrivals.get(key, deadline) for inval, _ in held) - sent)
        await asyncio.sleep(gap)
    per_worker = [(inval.pushes, inval.keys) for inval, _ in held]
    for inval, data in held:
        for conn in (inval, data):
            if conn is not None and conn.transport is not None:
                conn.transport.close()
    return {"p50_s": percentile(out, 0.5), "p99_s": percentile(out, 0.99), "max_s": max(out),
            "pushes_per_worker": per_worker[0][0], "keys_per_worker": per_worker[0][1]}


async def memory(port: int, mode: str, workers: int, keys: int) -> dict[str, Any]:
    admin = await connect(port)
    await admin.call("FLUSHALL")
    for start in range(0, keys, 1000):
        batch = [admin.call("SET", KEYS.user(i), "{}") for i in range(start, min(keys, start + 1000))]
        await asyncio.gather(*batch)
    before = _info(await admin.call("INFO", "memory"))["used_memory"]
    held = [await worker(port, mode) for _ in range(workers)]
    for _, data in held:
        if data is not None:
            for start in range(0, keys, 1000):
                await asyncio.gather(*(data.call("GET", KEYS.user(i))
                                       for i in range(start, min(keys, start + 1000))))
    info = _info(await admin.call("INFO", "everything"))
    for inval, data in held:
        for conn in (inval, data):
            if conn is not None and conn.transport is not None:
                conn.transport.close()
    return {"tracking_total_keys": info["tracking_total_keys"],
            "tracking_total_items": info["tracking_total_items"],
            "memory_added_bytes": info["used_memory"] - before}


def _info(raw: bytes) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in raw.decode().splitlines():
        name, _, value = line.partition(":")
        if value.isdigit():
            out[name] = int(value)
    return out


def measure(args: argparse.Namespace, port: int) -> dict[str, Any]:
    res: dict[str, Any] = {}
    for mode in ("bcast", "default"):
        idle = asyncio.run(delays(port, mode, args.workers, args.samples, args.rate))
        proc = multiprocessing.get_context("fork").Process(
            target=churn, args=(port, args.churn, args.samples / args.rate + 1.0))
        proc.start()
        time.sleep(0.5)  # the child churns before the first DEL
        try:
            busy = asyncio.run(delays(port, mode, args.workers, args.samples, args.rate))
        finally:
            proc.join()
        res[mode] = {"idle": idle, "churn": busy,
                     "memory": asyncio.run(memory(port, mode, args.workers, args.keys))}
        print(f"{mode} measured", flush=True)
    return res


def report(res: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"\n{args.workers} workers, {args.samples} DELs at {args.rate:g}/s; churn: "
          f"{args.churn:,} SETs/s of other user keys by another process; {args.keys:,} keys read")
    head = f"{'':26}{'bcast':>22}{'default':>22}"
    print(head)
    for phase in ("idle", "churn"):
        cells = [f"{res[m][phase]['p50_s'] * 1e3:.3f} / {res[m][phase]['p99_s'] * 1e3:.3f} ms"
                 for m in ("bcast", "default")]
        print(f"{'DEL -> slowest worker, ' + phase:<26}{cells[0]:>22}{cells[1]:>22}")
        keys = [f"{res[m][phase]['keys_per_worker']:,} keys" for m in ("bcast", "default")]
        print(f"{'  received per worker':<26}{keys[0]:>22}{keys[1]:>22}")
    for name in ("tracking_total_items", "memory_added_bytes"):
        cells = [f"{res[m]['memory'][name]:,}" for m in ("bcast", "default")]
        print(f"{name:<26}{cells[0]:>22}{cells[1]:>22}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/tracking_modes.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--rate", type=float, default=500.0, help="probe DELs per second")
    p.add_argument("--churn", type=int, default=10_000, help="other SETs per second")
    p.add_argument("--keys", type=int, default=100_000, help="keys read for the memory figure")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tracking-modes-") as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            res = measure(args, server.port)
        finally:
            server.stop()
    report(res, args)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
