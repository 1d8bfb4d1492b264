"""Issue 12's list benchmark: one category takes writes; do the others stay warm?

Its own stack (MariaDB, Redis, the invalidator, the API).  Readers loop over
``GET /products?category=<c>`` for every category; a writer updates products of one
category (``books``) at ``--writes`` per second.  Two phases, same run, same load:

- **per variant** (today): the invalidator bumps the generation of each variant the
  changed row is in (its category's and the unfiltered list) - nothing else;
- **one generation** (the scheme before, emulated): after each write the writer also bumps
  every variant's generation, which is what a single list-wide generation did.

Printed: the hit rate of the other categories' lists in each phase (from X-Cache), the
written category's, and the ratio.  The goal: others >= 0.95 per variant.

    .venv/bin/python -m bench.listvariants                      # 15 s per phase, 20 writes/s
    .venv/bin/python -m bench.listvariants --seconds 5 --writes 50
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.api_vs_bare import servers as started  # noqa: E402
from cachetail import config, schema  # noqa: E402
from cachetail.devstack import MariaDB, RedisServer, free_port, load_schema, terminate  # noqa: E402
from cachetail.keyspace import Keyspace  # noqa: E402
from invalidator.rules import filter_text  # noqa: E402

WRITTEN = "books"


def variant_generations(db: MariaDB, keys: Keyspace, categories: list[str]) -> list[str]:
    """The generation key of every variant: the unfiltered list and each category."""
    conn = db.connect(database="cachelab")
    try:
        listing = schema.resolve(config.load(ROOT / "cachetail.toml"), conn, "cachelab").lists[0]
        (f,) = listing.filters

        def query(sql: str, args: tuple[str, ...]) -> tuple[str, ...]:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return tuple(str(v) for v in cur.fetchone())

        out = [keys.list_generation(Keyspace.variant("p"))]
        out += [keys.list_generation(Keyspace.variant("p", (("category", filter_text(f, c, query)),)))
                for c in categories]
        return out
    finally:
        conn.close()


def writer(db: MariaDB, ids: list[int], rate: float, stop: threading.Event, bump_all: list[str] | None,
           cache: redis.Redis) -> int:
    conn = db.connect(database="cachelab")
    written = 0
    interval = 1.0 / rate
    next_at = time.monotonic()
    with conn.cursor() as cur:
        while not stop.is_set():
            cur.execute("UPDATE products SET stock = stock + 1 WHERE id = %s", (random.choice(ids),))
            written += 1
            if bump_all:
                pipe = cache.pipeline(transaction=False)
                for key in bump_all:
                    pipe.incr(key)
                pipe.execute()
            next_at += interval
            stop.wait(max(0.0, next_at - time.monotonic()))
    conn.close()
    return written


async def read(url: str, categories: list[str], seconds: float, concurrency: int) -> Counter[tuple[str, str]]:
    seen: Counter[tuple[str, str]] = Counter()
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        async def loop(n: int) -> None:
            i = n
            while time.monotonic() < deadline:
                category = categories[i % len(categories)]
                i += 1
                r = await client.get("/products", params={"category": category})
                group = "written" if category == WRITTEN else "others"
                seen[(group, r.headers.get("x-cache", "?"))] += 1

        await asyncio.gather(*(loop(n) for n in range(concurrency)))
    return seen


def hit_rate(seen: Counter[tuple[str, str]], group: str) -> float:
    total = sum(v for (g, _), v in seen.items() if g == group)
    return seen[(group, "HIT")] / total if total else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.listvariants", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="per phase (default 15)")
    parser.add_argument("--writes", type=float, default=20.0, help="writes per second (default 20)")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    api_pw, inv_pw = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    with tempfile.TemporaryDirectory(prefix="listvariants-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        db, cache = MariaDB(work / "db", server_id=5), RedisServer(work / "redis")
        for server in (db, cache):
            stack.callback(server.stop)
            server.start()
        load_schema(db, api_pw, inv_pw)
        base = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "DB_HOST": db.host,
                "DB_PORT": str(db.port), "DB_NAME": "cachelab", "REDIS_HOST": cache.host,
                "REDIS_PORT": str(cache.port)}
        inv = subprocess.Popen([sys.executable, "-m", "invalidator", "--env-file", "/nonexistent"],
                               env={**base, "DB_USER": "cachetail_invalidator", "DB_PASSWORD": inv_pw,
                                    "INVALIDATOR_SERVER_ID": "4343", "INVALIDATOR_METRICS_PORT": str(free_port()),
                                    "INVALIDATOR_STATE_DIR": str(work / "state")},
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stack.callback(terminate, inv)
        port = free_port()
        cmd = [sys.executable, "-m", "api", "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
               "--log-level", "warning"]
        stack.enter_context(started([(cmd, {**base, "DB_USER": "cachetail_api", "DB_PASSWORD": api_pw},
                                      f"http://127.0.0.1:{port}/health")], work))
        url = f"http://127.0.0.1:{port}"
        rows = db.query("SELECT category, id FROM cachelab.products")
        categories = sorted({str(c) for c, _ in rows})
        ids = [int(i) for c, i in rows if c == WRITTEN]
        r = redis.Redis(host=cache.host, port=cache.port)
        every_gen = variant_generations(db, Keyspace(), categories)
        results: dict[str, Counter[tuple[str, str]]] = {}
        for phase, bump_all in (("per variant", None), ("one generation", every_gen)):
            stop = threading.Event()
            count: list[int] = []
            t = threading.Thread(target=lambda: count.append(writer(db, ids, args.writes, stop, bump_all, r)))
            t.start()
            try:
                results[phase] = asyncio.run(read(url, categories, args.seconds, args.concurrency))
            finally:
                stop.set()
                t.join()
            print(f"  {phase:<15} {count[0]:>5} writes to {WRITTEN}, "
                  f"{sum(results[phase].values()):>6} reads", flush=True)
        print()
        print(f"{'hit rate of list reads':32}{'per variant':>14}{'one generation':>16}{'ratio':>8}")
        for group, label in (("others", f"the other {len(categories) - 1} categories"),
                             ("written", f"{WRITTEN} (written)")):
            a, b = hit_rate(results["per variant"], group), hit_rate(results["one generation"], group)
            print(f"{label:32}{a:>14.3f}{b:>16.3f}{(a / b if b else float('inf')):>8.1f}x")
        goal = hit_rate(results["per variant"], "others")
        print(f"\ngoal: the other categories >= 0.95 per variant: {'met' if goal >= 0.95 else 'NOT met'}"
              f" ({goal:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
