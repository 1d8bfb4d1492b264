"""The API's warm GET /user/{id} against bare Starlette endpoints, side by side (issues 2, 7).

On one uvicorn worker each, measured with wrk in the same run, rounds in alternating
order (ABCD DCBA ..., so drift on a shared machine falls on every target alike):

    const   bare Starlette returning constant bytes the size of a user (the ceiling)
    bare    bare Starlette doing one redis.asyncio GET of the same key
    near    the API, near-cache on (the default)
    off     the API, NEARCACHE=0 (every hit is one GET on the lean connection)

requests per second, latency, and the ratios (goals, issue 22: near >= 0.9x const, off >=
0.8x const; near >= 2x bare).  ``--busy`` keeps one core busy throughout (a host doing other
work); the issue asks for both.  Then the invalidation -> near-cache delay (bench/nearcache.py): from a DEL
sent to every worker's near-cache having applied it, idle and under wrk load.  Then
the stampede figure: the SELECTs that N concurrent cold reads of one id cost.

    .venv/bin/python -m bench.api_vs_bare            # its own throwaway MariaDB + Redis
    .venv/bin/python -m bench.api_vs_bare --env-file .env   # the servers of `make run`
    .venv/bin/python -m bench.api_vs_bare --quick    # every part, small (a smoke test)
    .venv/bin/python -m bench.api_vs_bare --busy     # the same with one core kept busy

Every server is started here, on free ports, with the same environment.
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

from bench import nearcache, wrk  # noqa: E402 - after the sys.path set-up above
from bench.promdiff import diff, parse  # noqa: E402 - after the sys.path set-up above
from bench.scenarios import _burst  # noqa: E402 - after the sys.path set-up above
from cachetail.devstack import MariaDB, RedisServer, free_port, load_schema, terminate  # noqa: E402 - after the sys.path set-up above
from cachetail.keyspace import Keyspace  # noqa: E402 - after the sys.path set-up above
from cachetail.settings import CacheSettings, RedisSettings, load_environment  # noqa: E402 - after the sys.path set-up above

SELECTS = "cachetail_mysql_queries_total"
TARGETS = (("const", "Starlette, constant bytes"), ("bare", "Starlette + one redis.asyncio GET"),
           ("near", "cachetail, near-cache on"), ("off", "cachetail, near-cache off"))


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
def servers(specs: list[tuple[list[str], dict[str, str], str]], cwd: Path) -> Iterator[None]:
    """Start every (command, environment, health URL) at once, then wait for each to answer."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for cmd, env, _ in specs:
            procs.append(subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE))
        deadline = time.monotonic() + 30
        for proc, (cmd, _, health) in zip(procs, specs, strict=True):
            while True:
                if proc.poll() is not None:
                    assert proc.stderr is not None
                    raise SystemExit(f"api_vs_bare: {' '.join(cmd[1:4])} exited: "
                                     f"{proc.stderr.read().decode()[-800:]}")
                try:
                    if httpx.get(health, timeout=1).status_code < 500:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"api_vs_bare: {health} did not answer in 30 s")
                time.sleep(0.1)
        yield
    finally:
        for proc in procs:
            terminate(proc)


def measure(args: argparse.Namespace, env: dict[str, str], work: Path) -> dict[str, Any]:
    py = sys.executable
    child = {**{k: v for k, v in os.environ.items() if not k.startswith("NEARCACHE")},
             **env, "PYTHONPATH": str(ROOT)}
    ports = {name: free_port() for name in ("near", "off", "bare")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    urls["const"] = urls["bare"]  # one server, two routes
    ids = range(1, args.ids + 1)
    paths = {name: [f"/{'const' if name == 'const' else 'user'}/{i}" for i in ids]
             for name, _ in TARGETS}
    quiet = ["--no-access-log", "--log-level", "warning"]
    uvicorn = [py, "-m", "uvicorn", "--workers", "1", *quiet, "--no-server-header",
               "--no-proxy-headers", "--host", "127.0.0.1", "--port"]
    probes = [f"http://127.0.0.1:{free_port()}" for _ in range(args.probes)]
    specs = [([py, "-m", "api", "--host", "127.0.0.1", "--port", str(ports[name]), "--workers", "1",
               *quiet], {**child, "NEARCACHE": switch}, f"{urls[name]}/health")
             for name, switch in (("near", "1"), ("off", "0"))]
    specs.append(([*uvicorn, str(ports["bare"]), "bench.bare_app:app"], child,
                  f"{urls['bare']}/const/1"))
    specs += [([*uvicorn, url.rsplit(":", 1)[1], "bench.nearcache_probe:app"],
               {**child, "NEARCACHE": "1"}, f"{url}/health") for url in probes]
    with ExitStack() as stack:
        stack.enter_context(servers(specs, work))
        http = stack.enter_context(httpx.Client(timeout=10))
        http.post(f"{urls['near']}/cache/clear",
                  headers={"Authorization": f"Bearer {env['ADMIN_TOKEN']}"})
        for path in paths["near"]:  # warm through the API: the others read the same keys
            assert http.get(urls["near"] + path).status_code == 200
        opts = dict(duration_s=args.duration, connections=args.connections, threads=args.threads)
        if args.quick:  # only what the checks below read: a smoke test, not figures
            for path in paths["near"][:20]:
                http.get(urls["near"] + path)
        else:
            for name, _ in TARGETS:  # every server warmed up once (and the near-cache filled)
                wrk.run(urls[name], paths[name], **{**opts, "duration_s": 1})
        for path in paths["near"][:20]:
            near, off, bare = (http.get(urls[name] + path) for name in ("near", "off", "bare"))
            assert near.headers.get("x-cache-tier") == "near", (path, near.headers)
            assert off.headers.get("x-cache-tier") == "redis", (path, off.headers)
            assert near.content == off.content == bare.content, path
        rounds = []
        for r in range(args.rounds):
            order = list(TARGETS) if r % 2 == 0 else list(reversed(TARGETS))
            res: dict[str, Any] = {name: wrk.run(urls[name], paths[name], **opts)
                                   for name, _ in order}
            rate = {name: res[name]["throughput_rps"] for name, _ in TARGETS}
            res["ratios"] = ratios(rate)
            rounds.append(res)
            print(f"round {r + 1}: " + ", ".join(f"{n} {rate[n]:,.0f}" for n, _ in TARGETS)
                  + " req/s", flush=True)
        delay = nearcache.measure(
            probes, RedisSettings.from_env(env), Keyspace.from_cache_settings(CacheSettings.from_env(env)),
            samples=args.delay_samples, rate=args.delay_rate, load_paths=paths["near"],
            connections=args.connections)
        stampede = []
        for uid in range(args.ids + 1, args.ids + 1 + args.stampede_rounds):
            before = parse(http.get(f"{urls['near']}/metrics").text)
            lat, resp = asyncio.run(_burst(urls["near"], f"/user/{uid}", args.stampede))
            d = diff(before, parse(http.get(f"{urls['near']}/metrics").text))
            stampede.append({"id": uid, "requests": len(resp),
                             "status_200": sum(1 for x in resp if x.status == 200),
                             "selects": int(d.value(SELECTS, entity="user")),
                             "p50_s": statistics.median(lat), "max_s": max(lat)})
    return {"rounds": rounds, "delay": delay, "stampede": stampede}


def ratios(rate: dict[str, float]) -> dict[str, float]:
    return {"near_const": rate["near"] / rate["const"], "off_const": rate["off"] / rate["const"],
            "near_bare": rate["near"] / rate["bare"], "off_bare": rate["off"] / rate["bare"]}


def summarize(res: dict[str, Any]) -> dict[str, Any]:
    def med(name: str, key: str) -> float:
        return float(statistics.median(
            r[name][key] if key == "throughput_rps" else r[name]["latency"][key]
            for r in res["rounds"]))
    out: dict[str, Any] = {name: {"throughput_rps": med(name, "throughput_rps"),
                                  "p50_s": med(name, "p50_s"), "p99_s": med(name, "p99_s")}
                           for name, _ in TARGETS}
    rate = {name: out[name]["throughput_rps"] for name, _ in TARGETS}
    out["ratios_of_medians"] = ratios(rate)
    out["ratios_per_round"] = {k: [r["ratios"][k] for r in res["rounds"]]
                               for k in out["ratios_of_medians"]}
    out["delay"] = res["delay"]
    out["stampede_selects"] = [s["selects"] for s in res["stampede"]]
    return out


def report(s: dict[str, Any], args: argparse.Namespace) -> None:
    print()
    print(f"warm GET /user/{{id}}, one uvicorn worker each, wrk -t{args.threads} "
          f"-c{args.connections} -d{args.duration:g}s x {args.rounds} rounds (medians)"
          + (", one core kept busy:" if args.busy else ":"))
    for name, label in TARGETS:
        f = s[name]
        print(f"  {label:<34} {f['throughput_rps']:>9,.0f} req/s   p50 {f['p50_s'] * 1000:6.2f} ms"
              f"   p99 {f['p99_s'] * 1000:6.2f} ms")
    goals = {"near_const": ("near-cache on / constant bytes", 0.9),
             "off_const": ("near-cache off / constant bytes", 0.8),
             "near_bare": ("near-cache on / bare GET", 2.0),
             "off_bare": ("near-cache off / bare GET", None)}
    for key, (label, goal) in goals.items():
        rounds = s["ratios_per_round"][key]
        per_round = ", ".join(f"{r:.2f}" for r in rounds)
        verdict = "" if goal is None else (
            f" -> {'meets' if s['ratios_of_medians'][key] >= goal else 'MISSES'} the {goal:g}x goal")
        print(f"  {label:<34} {s['ratios_of_medians'][key]:5.2f}x{verdict}")
        print(f"  {'':<34} per round: {per_round} (their median {statistics.median(rounds):.2f})")
    d = s["delay"]
    print(f"invalidation -> near-cache: DEL sent -> applied by the slowest of {d['workers']} "
          f"worker(s), {d['samples']} DELs at {d['rate']:g}/s:")
    loaded = f"one worker under wrk ({d['loaded']['load_rps']:,.0f} req/s)"
    for phase, label in (("idle", "idle"), ("loaded", loaded)):
        f = d[phase]
        print(f"  {label:<34} p50 {f['p50_s'] * 1000:6.3f} ms   p90 {f['p90_s'] * 1000:6.3f} ms"
              f"   p99 {f['p99_s'] * 1000:6.3f} ms   max {f['max_s'] * 1000:6.2f} ms")
        print(f"  {'':<34} reads right after a DEL served from a near-cache: {f['stale_reads']}"
              f" of {f['count'] * d['workers']}; missed {f['lost']}, tracking resets {f['tracking_resets']:g}")
    print(f"{args.stampede} concurrent cold reads of one id -> SELECTs per round: "
          f"{s['stampede_selects']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.api_vs_bare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env-file", default=None,
                   help="use the servers this dotenv file names (default: start throwaway ones)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    p.add_argument("--rounds", type=int, default=4,
                   help="rounds over the four targets, alternating order (default 4)")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    p.add_argument("--ids", type=int, default=1000, help="warm ids cycled through (default 1000)")
    p.add_argument("--stampede", type=int, default=200)
    p.add_argument("--stampede-rounds", type=int, default=3)
    p.add_argument("--probes", type=int, default=2,
                   help="API workers whose near-caches the delay is measured on (default 2)")
    p.add_argument("--delay-samples", type=int, default=1000, help="DELs timed per phase")
    p.add_argument("--delay-rate", type=float, default=200.0, help="DELs per second (default 200)")
    p.add_argument("--quick", action="store_true",
                   help="every part, small (a smoke test, not figures): 1 s runs, 1 round, 200 ids,"
                        " 100 DELs, 1 probe")
    p.add_argument("--busy", action="store_true", help="keep one core busy throughout")
    p.add_argument("--json", default=None, help="also write every figure to this file")
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.rounds, args.ids, args.probes = 1.0, 1, 200, 1
        args.delay_samples, args.stampede, args.stampede_rounds = 100, 50, 1
    if wrk.available() is None:
        print("api_vs_bare: wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="api-vs-bare-") as tmp, wrk.busy_core(args.busy):
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
    report(s, args)
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": s, **res}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
