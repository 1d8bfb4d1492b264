"""Issue 2's benchmark: the API's warm GET /user/{id} against a bare Starlette endpoint.

On one uvicorn worker each, measured side by side with wrk in the same run (rounds in
ABBA order, so drift on a shared machine falls on both): requests per second, latency,
and the ratio API / bare (the goal is >= 0.8).  Then the stampede figure: the SELECTs
that N concurrent cold reads of one id cost, from the API's /metrics.

    .venv/bin/python -m bench.api_vs_bare            # its own throwaway MariaDB + Redis
    .venv/bin/python -m bench.api_vs_bare --env-file .env   # the servers of `make run`

Both servers are started here, on free ports, with the same environment.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
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

from bench import wrk  # noqa: E402
from bench.promdiff import diff, parse  # noqa: E402
from bench.scenarios import _burst  # noqa: E402
from cachetail.devstack import MariaDB, RedisServer, free_port, load_schema, terminate  # noqa: E402
from cachetail.settings import load_environment  # noqa: E402

SELECTS = "cachetail_mysql_queries_total"


@contextmanager
def own_stack(base: Path) -> Iterator[dict[str, str]]:
    api_pw, inv_pw, token = (secrets.token_urlsafe(12) for _ in range(3))
    db = MariaDB(base / "mariadb", server_id=7)
    cache = RedisServer(base / "redis")
    try:
        db.start()
        load_schema(db, api_pw, inv_pw)
        cache.start()
        yield {"DB_HOST": db.host, "DB_PORT": str(db.port), "DB_NAME": "cachelab",
               "DB_USER": "cachetail_api", "DB_PASSWORD": api_pw, "REDIS_HOST": cache.host,
               "REDIS_PORT": str(cache.port), "ADMIN_TOKEN": token}
    finally:
        cache.stop()
        db.stop()


@contextmanager
def server(cmd: list[str], env: dict[str, str], health: str, cwd: Path) -> Iterator[str]:
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"api_vs_bare: {cmd[2]} exited: {proc.stderr.read().decode()[-800:]}")
            try:
                if httpx.get(health, timeout=1).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"api_vs_bare: {health} did not answer in 30 s")
            time.sleep(0.2)
        yield health
    finally:
        terminate(proc)


def measure(args: argparse.Namespace, env: dict[str, str], work: Path) -> dict[str, Any]:
    py = sys.executable
    api_port, bare_port = free_port(), free_port()
    child = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    api_url, bare_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{bare_port}"
    paths = [f"/user/{i}" for i in range(1, args.ids + 1)]
    with ExitStack() as stack:
        stack.enter_context(server(
            [py, "-m", "api", "--host", "127.0.0.1", "--port", str(api_port), "--workers", "1",
             "--no-access-log", "--log-level", "warning"], child, f"{api_url}/health", work))
        stack.enter_context(server(
            [py, "-m", "uvicorn", "bench.bare_app:app", "--host", "127.0.0.1", "--port",
             str(bare_port), "--workers", "1", "--no-access-log", "--log-level", "warning",
             "--no-server-header", "--no-proxy-headers"], child, f"{bare_url}/user/1", work))
        http = stack.enter_context(httpx.Client(timeout=10))
        http.post(f"{api_url}/cache/clear", headers={"Authorization": f"Bearer {env['ADMIN_TOKEN']}"})
        for p in paths:  # warm through the API: the bare endpoint reads the same keys
            assert http.get(api_url + p).status_code == 200
        for p in paths[:20]:
            r1, r2 = http.get(api_url + p), http.get(bare_url + p)
            assert r1.headers.get("x-cache") == "HIT" and r1.content == r2.content, p
        opts = dict(duration_s=args.duration, connections=args.connections, threads=args.threads)
        wrk.run(api_url, paths, **{**opts, "duration_s": 1})  # both servers warmed up once
        wrk.run(bare_url, paths, **{**opts, "duration_s": 1})
        rounds = []
        for r in range(args.rounds):
            order = [("api", api_url), ("bare", bare_url)]
            if r % 2:
                order.reverse()
            res = {name: wrk.run(url, paths, **opts) for name, url in order}
            res["ratio"] = res["api"]["throughput_rps"] / res["bare"]["throughput_rps"]
            rounds.append(res)
            print(f"round {r + 1}: api {res['api']['throughput_rps']:,.0f} req/s, bare "
                  f"{res['bare']['throughput_rps']:,.0f} req/s, ratio {res['ratio']:.3f}", flush=True)
        stampede = []
        for uid in range(args.ids + 1, args.ids + 1 + args.stampede_rounds):
            before = parse(http.get(f"{api_url}/metrics").text)
            lat, resp = asyncio.run(_burst(api_url, f"/user/{uid}", args.stampede))
            d = diff(before, parse(http.get(f"{api_url}/metrics").text))
            stampede.append({"id": uid, "requests": len(resp),
                             "status_200": sum(1 for x in resp if x.status == 200),
                             "selects": int(d.value(SELECTS, entity="user")),
                             "p50_s": statistics.median(lat), "max_s": max(lat)})
    return {"rounds": rounds, "stampede": stampede}


def summarize(res: dict[str, Any]) -> dict[str, Any]:
    def med(name: str, key: str) -> float:
        return statistics.median(r[name][key] if key == "throughput_rps" else r[name]["latency"][key]
                                 for r in res["rounds"])
    out = {name: {"throughput_rps": med(name, "throughput_rps"), "p50_s": med(name, "p50_s"),
                  "p99_s": med(name, "p99_s")} for name in ("api", "bare")}
    out["ratio_of_medians"] = out["api"]["throughput_rps"] / out["bare"]["throughput_rps"]
    out["ratio_per_round"] = [r["ratio"] for r in res["rounds"]]
    out["stampede_selects"] = [s["selects"] for s in res["stampede"]]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.api_vs_bare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env-file", default=None,
                   help="use the servers this dotenv file names (default: start throwaway ones)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    p.add_argument("--rounds", type=int, default=4, help="API/bare pairs, ABBA order (default 4)")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    p.add_argument("--ids", type=int, default=1000, help="warm ids cycled through (default 1000)")
    p.add_argument("--stampede", type=int, default=200)
    p.add_argument("--stampede-rounds", type=int, default=3)
    p.add_argument("--json", default=None, help="also write every figure to this file")
    args = p.parse_args(argv)
    if wrk.available() is None:
        print("api_vs_bare: wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="api-vs-bare-") as tmp:
        work = Path(tmp)
        if args.env_file:
            env = {k: v for k, v in load_environment(args.env_file).items()
                   if k.startswith(("DB_", "REDIS_", "CACHE_", "ADMIN_"))}
            if not env.get("ADMIN_TOKEN"):
                print("api_vs_bare: ADMIN_TOKEN is not set in the environment or the env file",
                      file=sys.stderr)
                return 2
            res = measure(args, env, work)
        else:
            with own_stack(work) as env:
                res = measure(args, env, work)
    s = summarize(res)
    print()
    print(f"warm GET /user/{{id}}, one uvicorn worker each, wrk -t{args.threads} "
          f"-c{args.connections} -d{args.duration:g}s x {args.rounds} rounds (medians):")
    for name, label in (("api", "cachetail API"), ("bare", "bare Starlette + redis GET")):
        f = s[name]
        print(f"  {label:<28} {f['throughput_rps']:>9,.0f} req/s   p50 {f['p50_s'] * 1000:6.2f} ms"
              f"   p99 {f['p99_s'] * 1000:6.2f} ms")
    verdict = "meets" if s["ratio_of_medians"] >= 0.8 else "MISSES"
    print(f"  ratio API / bare: {s['ratio_of_medians']:.3f} (per round: "
          f"{', '.join(f'{r:.3f}' for r in s['ratio_per_round'])}) -> {verdict} the 0.8 goal")
    print(f"{args.stampede} concurrent cold reads of one id -> SELECTs per round: "
          f"{s['stampede_selects']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": s, **res}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
