"""Where a warm GET /user/{id} spends its CPU in the API, by layer (issue 22's profile).

The ASGI app alone, in process (no uvicorn, no sockets for the request), on uvloop, 32
concurrent callers over 200 warm ids: the CPU a hit costs unprofiled, then cProfile's own
time per function grouped by layer and scaled to that CPU.  Near-cache on and off; with
``--before <checkout>`` the same for another checkout of cachetail, side by side.

    .venv/bin/python -m bench.hitprofile
    .venv/bin/python -m bench.hitprofile --before /tmp/cachetail-before

Its own throwaway MariaDB and Redis.  cProfile inflates calls more than straight-line code,
so the shares are a guide and the total is the measured figure.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LAYERS = (  # (a fragment of the file name, its layer), first match wins
    ("starlette/", "Starlette: middleware, exception layer, router"),
    ("prometheus_client/", "metrics"), ("metrics/", "metrics"), ("metrics_endpoint.py", "metrics"),
    ("dispatch.py", "cachetail's dispatch"),
    ("listreads.py", "the lookup: near-cache, Redis"),  # before reads.py, which its name contains
    ("entities.py", "the endpoint: key, validation, headers"), ("reads.py", "the endpoint: key, validation, headers"),
    ("codec", "the endpoint: key, validation, headers"), ("freshness.py", "the endpoint: key, validation, headers"),
    ("nearcache.py", "the lookup: near-cache, Redis"), ("cache.py", "the lookup: near-cache, Redis"),
    ("answer.py", "the lookup: near-cache, Redis"), ("fills.py", "the lookup: near-cache, Redis"),
    ("lean.py", "the lookup: near-cache, Redis"), ("redisconn.py", "the lookup: near-cache, Redis"),
    ("bench/hitprofile.py", ""),  # the caller itself: left out
)
OTHER = "asyncio, builtins, the rest"


def layer(filename: str) -> str:
    for fragment, name in LAYERS:
        if fragment in filename:
            return name
    return OTHER


def child(env: dict[str, str]) -> None:
    """In the process of one checkout: measure, profile, print."""
    import uvloop

    from api.app import create_app
    from api.settings import ApiSettings

    app = create_app(ApiSettings.from_env(env))
    headers = [(b"host", b"127.0.0.1:5000"), (b"user-agent", b"wrk"), (b"accept", b"*/*")]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    async def call(path: str) -> None:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
                 "root_path": "", "app": app, "headers": headers, "client": ("127.0.0.1", 1),
                 "server": ("127.0.0.1", 5000)}
        await app(scope, receive, send)

    async def main() -> None:
        async with app.router.lifespan_context(app):
            paths = [f"/user/{i}" for i in range(1, 201)]
            for path in paths * 3:  # warm: Redis, then the near-cache
                await call(path)

            async def caller(w: int) -> None:
                for _ in range(25):
                    for path in paths[w::32]:
                        await call(path)

            cpus = []
            for _ in range(5):
                started = time.process_time()
                await asyncio.gather(*(caller(w) for w in range(32)))
                cpus.append((time.process_time() - started) / 5000 * 1e6)
            cpu = statistics.median(cpus)
            profile = cProfile.Profile()
            profile.enable()
            await asyncio.gather(*(caller(w) for w in range(32)))
            profile.disable()
            by: dict[str, float] = {}
            for (filename, _, function), row in pstats.Stats(profile).stats.items():
                name = layer(filename if filename != "~" else function)
                if name:
                    by[name] = by.get(name, 0.0) + row[2]
            total = sum(by.values())
            print(f"  {cpu:5.1f} µs of CPU a hit, near-cache {'on' if env['NEARCACHE'] == '1' else 'off'}:")
            for name, spent in sorted(by.items(), key=lambda kv: -kv[1]):
                print(f"      {name:<48} {spent / total * cpu:5.1f} µs  {spent / total * 100:3.0f} %")

    uvloop.run(main())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.hitprofile", description=__doc__.splitlines()[0])
    p.add_argument("--before", default=None, help="another checkout of cachetail, profiled first")
    p.add_argument("--child", nargs="*", help=argparse.SUPPRESS)  # KEY=VALUE settings: measure here
    args = p.parse_args(argv)
    if args.child is not None:
        child(dict(a.split("=", 1) for a in args.child))
        return 0
    sys.path.insert(0, str(ROOT))
    from cachetail.devstack import MariaDB, RedisServer, load_schema

    with tempfile.TemporaryDirectory(prefix="bench-hitprofile-") as tmp:
        db, cache = MariaDB(Path(tmp) / "db", server_id=5), RedisServer(Path(tmp) / "redis")
        try:
            db.start()
            cache.start()
            password = secrets.token_urlsafe(12)
            load_schema(db, password, password)
            for root in ([Path(args.before).resolve()] if args.before else []) + [ROOT]:
                print(f"{root}:", flush=True)
                for near in ("1", "0"):
                    env = {"DB_HOST": db.host, "DB_PORT": str(db.port), "DB_USER": "cachetail_api",
                           "DB_PASSWORD": password, "REDIS_HOST": cache.host, "REDIS_PORT": str(cache.port),
                           "NEARCACHE": near}
                    # run as a script: the checkout's own api, metrics and cachetail come first
                    subprocess.run([sys.executable, __file__, "--child", *(f"{k}={v}" for k, v in env.items())],
                                   cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, check=True)
        finally:
            cache.stop()
            db.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
