"""Issue 22's other figures: the miss path, the near-cache over a slow Redis, one and two workers.

Throwaway MariaDB (the lab's users, plus ``--extra-users`` more so that misses never run
out) and Redis, the API as ``python -m api`` (uvicorn), wrk (one thread, ``--connections``):

- **misses**: cold ``GET /user/{id}`` for distinct ids (the cache cleared, every id asked
  once) against ``GET /user/{id}/nocache`` for other distinct ids, side by side in
  alternating rounds: the lease, the compare-and-set store and the Redis round trips of a
  fill against the same SELECT alone.  Goal: at least 0.8x.
- **slow redis**: warm hits with Redis behind a proxy that adds ``--redis-delay-ms`` (0.25)
  each way, about a cross-AZ ElastiCache hop: near-cache on against off.
- **workers**: warm hits, near-cache on, with 1 and 2 uvicorn workers (wrk with two threads
  and twice the connections for two).

``--busy`` keeps one core busy (a spinning process) through every measurement.

    .venv/bin/python -m bench.hitpath            # ~3 minutes
    .venv/bin/python -m bench.hitpath --busy
    .venv/bin/python -m bench.hitpath --quick    # every part, small (a smoke test)
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import wrk  # noqa: E402 - after the sys.path set-up above
from cachetail.devstack import MariaDB, RedisServer, free_port, load_schema, terminate  # noqa: E402 - after the sys.path set-up above
from cachetail.tcpproxy import TcpProxy  # noqa: E402 - after the sys.path set-up above

LAB_USERS = 10_000


@contextmanager
def api(env: dict[str, str], work: Path, workers: int = 1, **extra: str) -> Iterator[str]:
    port = free_port()
    log = open(work / f"api-{port}.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "api", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", str(workers), "--no-access-log", "--log-level", "warning"],
                            env={**os.environ, **env, **extra, "PYTHONPATH": str(ROOT)}, cwd=work,
                            stdout=log, stderr=subprocess.STDOUT)
    log.close()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"bench.hitpath: the API did not start (see {work})")
            time.sleep(0.1)
        yield url
    finally:
        terminate(proc)


def line(label: str, res: dict[str, Any]) -> str:
    lat = res["latency"]
    return (f"  {label:<40} {res['throughput_rps']:>9,.0f} req/s   p50 {lat['p50_s'] * 1000:6.2f} ms"
            f"   p99 {lat['p99_s'] * 1000:6.2f} ms")


def misses(url: str, token: str, args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    http = httpx.Client(timeout=10)
    per_run = args.per_run
    first = LAB_USERS + 1
    out = []
    for r in range(args.rounds):
        order = ("cached", "nocache") if r % 2 == 0 else ("nocache", "cached")
        for kind in order:
            ids = range(first, first + per_run)
            first += per_run
            http.post(f"{url}/cache/clear", headers={"Authorization": f"Bearer {token}"})
            paths = [f"/user/{i}" + ("/nocache" if kind == "nocache" else "") for i in ids]
            res = wrk.run(url, paths, duration_s=args.duration, connections=args.connections, threads=1)
            if res["requests"] > per_run:
                raise SystemExit(f"bench.hitpath: {res['requests']} requests ran past {per_run} distinct ids;"
                                 " raise --per-run")
            out.append((kind, res))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.hitpath", description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=4.0, help="seconds per wrk run (default 4)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--per-run", type=int, default=40_000, help="distinct ids a miss run may use")
    p.add_argument("--redis-delay-ms", type=float, default=0.25, help="each way (default 0.25)")
    p.add_argument("--busy", action="store_true", help="keep one core busy throughout")
    p.add_argument("--parts", default="misses,slow,workers")
    p.add_argument("--quick", action="store_true", help="1 s runs, one round, 5,000 ids a miss run")
    p.add_argument("--json", default=None, help="also write every figure to this file")
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.rounds, args.per_run = 1.0, 1, 5000
    if wrk.available() is None:
        print("bench.hitpath: wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    parts = args.parts.split(",")
    api_pw, inv_pw, token = (secrets.token_urlsafe(12) for _ in range(3))
    with tempfile.TemporaryDirectory(prefix="bench-hitpath-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        db, cache = MariaDB(work / "db", server_id=3), RedisServer(work / "redis")
        for server in (db, cache):
            stack.callback(server.stop)
            server.start()
        load_schema(db, api_pw, inv_pw)
        extra = args.per_run * 2 * args.rounds + 1000
        db.query("INSERT INTO cachelab.users (username, email, full_name) SELECT CONCAT('bench', seq),"
                 f" CONCAT('bench', seq, '@example.com'), CONCAT('Bench User ', seq) FROM cachelab.seq_1_to_{extra}")
        env = {"DB_HOST": db.host, "DB_PORT": str(db.port), "DB_NAME": "cachelab", "DB_USER": "cachetail_api",
               "DB_PASSWORD": api_pw, "REDIS_HOST": cache.host, "REDIS_PORT": str(cache.port),
               "ADMIN_TOKEN": token}
        stack.enter_context(wrk.busy_core(args.busy))
        print(f"wrk -t1 -c{args.connections} -d{args.duration:g}s, medians of {args.rounds} rounds"
              + (", one core kept busy" if args.busy else ""), flush=True)
        warm = [f"/user/{i}" for i in range(1, 1001)]
        figures: dict[str, Any] = {"busy": args.busy}

        def median(runs: list[dict[str, Any]]) -> dict[str, Any]:
            ordered = sorted(runs, key=lambda r: r["throughput_rps"])
            return ordered[len(ordered) // 2]

        if "misses" in parts:
            with api(env, work) as url:
                runs = misses(url, token, args)
            cached = median([r for k, r in runs if k == "cached"])
            nocache = median([r for k, r in runs if k == "nocache"])
            print("cold misses of distinct ids (a fill: lease, SELECT, compare-and-set store):")
            print(line("GET /user/{id}, every one a miss", cached))
            print(line("GET /user/{id}/nocache, the SELECT alone", nocache))
            ratio = cached["throughput_rps"] / nocache["throughput_rps"]
            print(f"  misses / nocache                       {ratio:5.2f}x (goal 0.8x)", flush=True)
            figures["misses"] = {"miss": cached, "nocache": nocache, "ratio": ratio}
        if "slow" in parts:
            proxy = TcpProxy((cache.host, cache.port), delay_s=args.redis_delay_ms / 1000).start()
            stack.callback(proxy.close)
            slow = {**env, "REDIS_PORT": str(proxy.port)}
            results = {}
            for near in ("1", "0"):
                with api(slow, work, NEARCACHE=near) as url:
                    wrk.run(url, warm, duration_s=1, connections=args.connections, threads=1)
                    results[near] = median([wrk.run(url, warm, duration_s=args.duration,
                                                    connections=args.connections, threads=1)
                                            for _ in range(args.rounds)])
            print(f"warm hits, Redis {args.redis_delay_ms:g} ms away each way:")
            print(line("near-cache on", results["1"]))
            print(line("near-cache off", results["0"]))
            ratio = results["1"]["throughput_rps"] / results["0"]["throughput_rps"]
            print(f"  on / off                               {ratio:5.2f}x", flush=True)
            figures["slow_redis"] = {"delay_ms": args.redis_delay_ms, "near_on": results["1"],
                                     "near_off": results["0"], "ratio": ratio}
        if "workers" in parts:
            results = {}
            for n in (1, 2):
                with api(env, work, workers=n) as url:
                    wrk.run(url, warm, duration_s=1, connections=args.connections * n, threads=n)
                    results[n] = median([wrk.run(url, warm, duration_s=args.duration,
                                                 connections=args.connections * n, threads=n)
                                         for _ in range(args.rounds)])
            print("warm hits, near-cache on, by uvicorn workers (wrk threads = workers):")
            for n in (1, 2):
                print(line(f"{n} worker{'s' if n > 1 else ''}", results[n]))
            ratio = results[2]["throughput_rps"] / results[1]["throughput_rps"]
            print(f"  2 / 1                                  {ratio:5.2f}x", flush=True)
            figures["workers"] = {"1": results[1], "2": results[2], "ratio": ratio}
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
