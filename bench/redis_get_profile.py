"""Where redis.asyncio spends a warm GET, and what the lean connection costs instead.

Prints figures, asserts nothing.  A throwaway Redis on a free port, one uvloop
event loop, ``--concurrency`` coroutines GETting 200-byte values in a loop:

1. GETs per second through the API's redis-py client (BlockingConnectionPool,
   hiredis) and through api/lean.py, alternating (ABAB) in the same process;
2. a cProfile of the redis-py run, its exclusive time grouped by what the code
   does, as a share of the whole.

    .venv/bin/python bench/redis_get_profile.py
    .venv/bin/python bench/redis_get_profile.py --concurrency 1 --seconds 3
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import uvloop

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from api.lean import LeanRedis  # noqa: E402
from api.redisconn import build_client  # noqa: E402
from cachetail.devstack import RedisServer  # noqa: E402
from cachetail.settings import RedisSettings  # noqa: E402

# (group, test on "path:function") in order: the first that matches takes the function.
GROUPS: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("pool: take and give back a connection (locks, checks)",
     lambda f: "connection.py" in f and any(n in f for n in (
         "get_connection", "release", "ensure_connection", "can_read", "is_connected",
         "_get_", "make_connection", "connect", "get_encoder", "reset"))
     or "asyncio/locks.py" in f),
    ("timeouts: asyncio.timeout scopes per read and write",
     lambda f: "asyncio/timeouts.py" in f or "asyncio/tasks.py" in f),
    ("packing the command", lambda f: "pack_command" in f or "encode" in f),
    ("reading and parsing the reply",
     lambda f: "_parsers" in f or "read_response" in f or "parse_response" in f),
    ("socket writes", lambda f: "streams.py" in f or "send_packed_command" in f
     or "send_command" in f),
    ("retry, event and observability hooks",
     lambda f: any(n in f for n in ("retry.py", "event.py", "observability", "utils.py"))),
    ("client dispatch (execute_command)", lambda f: "redis/asyncio/client.py" in f
     or "redis/commands" in f),
)


async def rate(get: Callable[[str], Awaitable[object]], concurrency: int, seconds: float) -> float:
    done = 0
    stop = time.perf_counter() + seconds

    async def loop(i: int) -> None:
        nonlocal done
        key = f"ct:{{u:{i}}}"
        while time.perf_counter() < stop:
            await get(key)
            done += 1

    await asyncio.gather(*(loop(i) for i in range(concurrency)))
    return done / seconds


async def measure(port: int, args: argparse.Namespace) -> tuple[list[float], list[float], pstats.Stats]:
    settings = RedisSettings.from_env({"REDIS_PORT": str(port)})
    redis_py, lean = build_client(settings), LeanRedis(settings)
    for i in range(args.concurrency):
        await redis_py.set(f"ct:{{u:{i}}}", b"x" * 200)
    await rate(redis_py.get, args.concurrency, 0.5)
    await rate(lean.get, args.concurrency, 0.5)
    py_rates, lean_rates = [], []
    for _ in range(args.rounds):
        py_rates.append(await rate(redis_py.get, args.concurrency, args.seconds))
        lean_rates.append(await rate(lean.get, args.concurrency, args.seconds))
    profile = cProfile.Profile()
    profile.enable()
    await rate(redis_py.get, args.concurrency, args.seconds)
    profile.disable()
    await redis_py.aclose()
    await lean.close()
    return py_rates, lean_rates, pstats.Stats(profile)


def grouped(stats: pstats.Stats) -> list[tuple[str, float]]:
    totals: dict[str, float] = {}
    raw = stats.stats  # type: ignore[attr-defined]
    everything = sum(tt for (_, _, tt, _, _) in raw.values())
    for (path, _, name), (_, _, tt, _, _) in raw.items():
        label = f"{path}:{name}"
        group = next((g for g, test in GROUPS if test(label)), "everything else (event loop, bench)")
        totals[group] = totals.get(group, 0.0) + tt
    return sorted(((g, t / everything) for g, t in totals.items()), key=lambda x: -x[1])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/redis_get_profile.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="redis-get-profile-") as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            py_rates, lean_rates, stats = uvloop.run(measure(server.port, args))
        finally:
            server.stop()
    py, lean = max(py_rates), max(lean_rates)
    print(f"{args.concurrency} concurrent GET loops, one event loop, best of {args.rounds} x "
          f"{args.seconds:g} s:")
    print(f"  redis.asyncio (pool, hiredis)  {py:>9,.0f} GET/s  {1e6 / py:6.1f} us per GET")
    print(f"  api/lean.py (one pipelined)    {lean:>9,.0f} GET/s  {1e6 / lean:6.1f} us per GET"
          f"   ({lean / py:.1f}x)")
    print("where redis.asyncio's time goes (cProfile, exclusive time):")
    for group, share in grouped(stats):
        print(f"  {share * 100:5.1f} %  {group}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
