"""Issue 6's benchmark: scale-out figures, on throwaway servers started here.

1. Warm ``GET /user/{id}`` on a Redis Cluster (3 primaries + 3 replicas) against a
   single Redis node, side by side, near-cache on and off: four uvicorn workers of
   one each, wrk rounds in alternating order (ABCD, DCBA, ...), requests per
   second, latency and the two ratios cluster / single (issue 15's goals: 0.9x
   with the near-cache, 0.85x without).  Then where the product lists live and
   are read on the cluster, per primary.
2. SELECTs per stampede: N concurrent cold reads of one id, each on its own
   connection, against ``python -m api --workers 4`` (from its summed /metrics).
3. Standby takeover: two invalidators share a lease; the leader is killed with
   SIGKILL, a row changes at once, and the clock runs until the standby leads
   and until that change has reached Redis.  The killed one comes back as the
   new standby, and again, ``--kills`` times: median and max.

    .venv/bin/python -m bench.scaleout                  # all three, full size
    .venv/bin/python -m bench.scaleout --quick          # a smoke run (seconds)
    .venv/bin/python -m bench.scaleout --part takeover --lease 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import wrk  # noqa: E402 - after the sys.path set-up above
from bench.api_vs_bare import servers as started  # noqa: E402 - after the sys.path set-up above
from bench.promdiff import diff, parse  # noqa: E402 - after the sys.path set-up above
from bench.scenarios import _burst  # noqa: E402 - after the sys.path set-up above
from cachetail.devstack import (  # noqa: E402 - after the sys.path set-up above
    MariaDB, RedisCluster, RedisServer, free_port, load_schema, terminate,
)
from cachetail.keyspace import Keyspace  # noqa: E402 - after the sys.path set-up above

PARTS = ("hits", "stampede", "takeover")


@dataclass
class Servers:
    db: MariaDB
    single: RedisServer
    cluster: RedisCluster
    api_pw: str
    inv_pw: str
    token: str

    def env(self, kind: str, **extra: str) -> dict[str, str]:
        cache = self.cluster if kind == "cluster" else self.single
        return {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT),
                "DB_HOST": self.db.host, "DB_PORT": str(self.db.port), "DB_NAME": "cachelab",
                "DB_USER": "cachetail_api", "DB_PASSWORD": self.api_pw,
                "REDIS_HOST": cache.host, "REDIS_PORT": str(cache.port),
                "REDIS_CLUSTER": "1" if kind == "cluster" else "0",
                "ADMIN_TOKEN": self.token, **extra}


@contextmanager
def servers(base: Path, with_cluster: bool) -> Iterator[Servers]:
    api_pw, inv_pw, token = (secrets.token_urlsafe(12) for _ in range(3))
    db = MariaDB(base / "mariadb", server_id=9)
    single = RedisServer(base / "redis")
    cluster = RedisCluster(base / "cluster")
    try:
        db.start()
        load_schema(db, api_pw, inv_pw)
        single.start()
        if with_cluster:
            cluster.start()
        yield Servers(db, single, cluster, api_pw, inv_pw, token)
    finally:
        cluster.stop()
        single.stop()
        db.stop()


def api(env: dict[str, str], work: Path, workers: int = 1) -> Any:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "api", "--host", "127.0.0.1", "--port", str(port), "--workers",
           str(workers), "--no-access-log", "--log-level", "warning"]
    env = {**env, **({"PROMETHEUS_MULTIPROC_DIR": str(work / f"prom-{port}")} if workers > 1 else {})}
    return started([(cmd, env, f"{url}/health")], work), url


# ------------------------------------------------------------------ 1. hits

# (near-cache, Redis kind) targets; the goal of each ratio cluster / single (issue 15)
TARGETS = (("near", "single"), ("near", "cluster"), ("nonear", "single"), ("nonear", "cluster"))
GOALS = {"near": 0.9, "nonear": 0.85}
CATEGORIES = ("electronics", "books", "clothing", "home", "garden", "sports", "toys",
              "grocery", "beauty", "automotive")


def hits(s: Servers, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    paths = [f"/user/{i}" for i in range(1, args.ids + 1)]
    opts = dict(duration_s=args.duration, connections=args.connections, threads=1)
    with ExitStack() as stack:
        urls: dict[tuple[str, str], str] = {}
        for near, kind in TARGETS:
            ctx, url = api(s.env(kind, NEARCACHE="1" if near == "near" else "0"), work)
            stack.enter_context(ctx)
            urls[(near, kind)] = url
        http = stack.enter_context(httpx.Client(timeout=10))
        for target, url in urls.items():
            for p in paths:
                assert http.get(url + p).status_code == 200
            assert http.get(url + paths[0]).headers["x-cache"] == "HIT", target
            wrk.run(url, paths, **{**opts, "duration_s": 1})
        rounds = []
        for r in range(args.rounds):
            order = list(TARGETS) if r % 2 == 0 else list(reversed(TARGETS))  # ABCD, DCBA, ...
            res = {target: wrk.run(urls[target], paths, **opts) for target in order}
            rounds.append(res)
            print(f"  round {r + 1}: " + ", ".join(
                f"{near} {kind} {res[(near, kind)]['throughput_rps']:,.0f}" for near, kind in TARGETS)
                + " req/s; cluster / single: " + ", ".join(
                f"{near} {_ratio(res, near):.3f}" for near in GOALS), flush=True)
        out = summarize(rounds, args)
        out["lists"] = list_distribution(s, urls[("nonear", "cluster")], args)
    return out


def summarize(rounds: list[dict[tuple[str, str], Any]], args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    print(f"warm GET /user/{{id}}, one uvicorn worker each, wrk -c{args.connections} "
          f"-d{args.duration:g}s x {args.rounds} rounds (medians):")
    for near, goal in GOALS.items():
        figures: dict[str, Any] = {kind: {
            key: statistics.median(_figure(r[(near, kind)], key) for r in rounds)
            for key in ("throughput_rps", "p50_s", "p99_s")} for kind in ("single", "cluster")}
        figures["ratio_of_medians"] = (figures["cluster"]["throughput_rps"]
                                       / figures["single"]["throughput_rps"])
        figures["ratio_per_round"] = [_ratio(r, near) for r in rounds]
        figures["goal"] = goal
        out[near] = figures
        print(f"  near-cache {'on' if near == 'near' else 'off'}:")
        for kind, label in (("single", "one Redis node"), ("cluster", "Redis Cluster 3+3")):
            f = figures[kind]
            print(f"    {label:<20} {f['throughput_rps']:>9,.0f} req/s   p50 {f['p50_s'] * 1000:6.2f} ms"
                  f"   p99 {f['p99_s'] * 1000:6.2f} ms")
        ratio = figures["ratio_of_medians"]
        print(f"    ratio cluster / single: {ratio:.3f} -> {'meets' if ratio >= goal else 'misses'}"
              f" the {goal:g}x goal; per round "
              + ", ".join(f"{x:.3f}" for x in figures["ratio_per_round"])
              + f" (their median {statistics.median(figures['ratio_per_round']):.3f})")
    return out


def _figure(run: dict[str, Any], key: str) -> float:
    return float(run["throughput_rps"] if key == "throughput_rps" else run["latency"][key])


def _ratio(res: dict[tuple[str, str], Any], near: str) -> float:
    return float(res[(near, "cluster")]["throughput_rps"] / res[(near, "single")]["throughput_rps"])


def list_distribution(s: Servers, url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Where product lists live and are read on the cluster: list keys per primary (SCAN),
    and list reads per primary (its MGET count) during a short wrk run over every variant."""
    paths = ["/products"] + [f"/products?category={c}" for c in CATEGORIES]
    client = redis.RedisCluster(host=s.cluster.host, port=s.cluster.port)
    try:
        primaries = client.get_primaries()
        nodes = {f"{n.host}:{n.port}": client.get_redis_connection(n) for n in primaries}
        for p in paths:
            httpx.get(url + p, timeout=10).raise_for_status()

        def mgets() -> dict[str, int]:
            return {name: int(node.info("commandstats").get("cmdstat_mget", {}).get("calls", 0))
                    for name, node in nodes.items()}

        before = mgets()
        wrk.run(url, paths, duration_s=max(1.0, args.duration / 5), connections=args.connections,
                threads=1)
        reads = {name: calls - before[name] for name, calls in mgets().items()}
        keys = {name: sum(1 for pattern in ("ct:{p}*", "ct:{p:*") for _ in node.scan_iter(match=pattern, count=1000))
                for name, node in nodes.items()}
    finally:
        client.close()
    total_keys, total_reads = sum(keys.values()) or 1, sum(reads.values()) or 1
    print(f"product lists on the cluster ({len(paths)} variants, a hash slot each):")
    for name in sorted(nodes):
        print(f"  primary {name:<22} list keys {keys[name]:>4} ({keys[name] / total_keys:6.1%})"
              f"   list reads {reads[name]:>8,} ({reads[name] / total_reads:6.1%})")
    return {"keys_per_primary": keys, "reads_per_primary": reads}


# -------------------------------------------------------------- 2. stampede


def stampede(s: Servers, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    kinds = ["single", "cluster"] if s.cluster.nodes else ["single"]
    for kind in kinds:
        ctx, url = api(s.env(kind, CACHE_LEASE_WAIT_MS="2000"), work, workers=4)
        selects = []
        with ctx:
            for n in range(args.stampede_rounds):
                uid = 9000 + n + (100 if kind == "cluster" else 0)
                before = parse(httpx.get(f"{url}/metrics", timeout=10).text)
                _, answers = asyncio.run(_burst(url, f"/user/{uid}", args.stampede))
                after = parse(httpx.get(f"{url}/metrics", timeout=10).text)
                assert all(a.status == 200 for a in answers)
                selects.append(int(diff(before, after).value("cachetail_mysql_queries_total",
                                                            entity="user")))
        out[kind] = selects
        print(f"{args.stampede} concurrent cold reads of one id over 4 workers ({kind}): "
              f"SELECTs per round {selects}")
    return out


# -------------------------------------------------------------- 3. takeover


class Invalidator:
    def __init__(self, s: Servers, work: Path, kind: str, prefix: str, lease_s: float, sid: int) -> None:
        self.port = free_port()
        self.env = {**s.env(kind), "DB_USER": "cachetail_invalidator", "DB_PASSWORD": s.inv_pw,
                    "CACHE_KEY_PREFIX": prefix, "INVALIDATOR_SERVER_ID": str(sid),
                    "INVALIDATOR_METRICS_PORT": str(self.port), "INVALIDATOR_LEASE_S": str(lease_s),
                    "INVALIDATOR_HEARTBEAT_S": "1", "INVALIDATOR_STATE_DIR": str(work / f"state-{sid}"),
                    "PYTHONUNBUFFERED": "1"}
        self.log = work / f"invalidator-{sid}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "invalidator", "--env-file", "/nonexistent"],
                                         env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)

    def leader(self) -> float | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=1) as r:
                text = r.read().decode()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith("cachetail_invalidator_leader "):
                return float(line.split()[1])
        return None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)


def wait(predicate: Any, timeout_s: float, what: str, interval: float = 0.005) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if predicate():
            return time.monotonic()
        time.sleep(interval)
    raise SystemExit(f"scaleout: no {what} within {timeout_s} s")


def takeover(s: Servers, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    kind = "cluster" if args.takeover_on == "cluster" and s.cluster.nodes else "single"
    prefix = "bench" + secrets.token_hex(3)
    ks = Keyspace(prefix=prefix)
    pair = [Invalidator(s, work, kind, prefix, args.lease, 7100 + i) for i in range(2)]
    client = (redis.RedisCluster(host=s.cluster.host, port=s.cluster.port) if kind == "cluster"
              else redis.Redis(host=s.single.host, port=s.single.port))
    db = s.db.connect(database="cachelab")
    to_lead, to_fresh = [], []
    try:
        pair[0].start()
        wait(lambda: pair[0].leader() == 1, 30, "first leader")
        pair[1].start()
        wait(lambda: pair[1].leader() == 0, 30, "standby")
        leader, standby = pair
        for n in range(args.kills):
            key = ks.user(500 + n)
            client.set(key, b'{"stale":true}')
            time.sleep(random.uniform(0.2, args.lease))  # any point of the renewal cycle
            leader.kill()
            killed = time.monotonic()
            with db.cursor() as cur:
                cur.execute("UPDATE users SET full_name = CONCAT('k', full_name) WHERE id = %s", (500 + n,))
            led = wait(lambda standby=standby: standby.leader() == 1, args.lease * 4 + 10, "takeover")
            fresh = wait(lambda key=key: client.get(key) is None, 30, "the change applied")
            to_lead.append(led - killed)
            to_fresh.append(fresh - killed)
            print(f"  kill {n + 1}: standby leads after {to_lead[-1]:.2f} s, the change made at the"
                  f" kill is in Redis after {to_fresh[-1]:.2f} s", flush=True)
            leader.start()  # back, as the new standby
            wait(lambda leader=leader: leader.leader() == 0, 30, "the killed one back as standby")
            leader, standby = standby, leader
    finally:
        for inv in pair:
            inv.stop()
        db.close()
        client.close()
    out = {"redis": kind, "lease_s": args.lease, "kills": args.kills,
           "to_leader_s": {"median": statistics.median(to_lead), "max": max(to_lead)},
           "to_change_applied_s": {"median": statistics.median(to_fresh), "max": max(to_fresh)}}
    print(f"standby takeover over {args.kills} SIGKILLs ({kind}, INVALIDATOR_LEASE_S={args.lease:g}):"
          f" leads after median {out['to_leader_s']['median']:.2f} s, max {out['to_leader_s']['max']:.2f} s;"
          f" change applied median {out['to_change_applied_s']['median']:.2f} s,"
          f" max {out['to_change_applied_s']['max']:.2f} s")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scaleout", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", action="append", choices=PARTS, help="run only this part (repeatable)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    p.add_argument("--rounds", type=int, default=4,
                   help="rounds over the four hit targets, alternating order (default 4)")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--ids", type=int, default=1000, help="warm ids cycled through (default 1000)")
    p.add_argument("--stampede", type=int, default=200)
    p.add_argument("--stampede-rounds", type=int, default=3)
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--lease", type=float, default=5.0, help="INVALIDATOR_LEASE_S (default 5, the default)")
    p.add_argument("--takeover-on", choices=("single", "cluster"), default="single")
    p.add_argument("--json", default=None, help="also write every figure to this file")
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.rounds, args.ids = 1.0, 2, 50
        args.stampede, args.stampede_rounds, args.kills, args.lease = 50, 1, 2, 1.0
    parts = args.part or list(PARTS)
    if "hits" in parts and wrk.available() is None:
        print("scaleout: wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="scaleout-") as tmp:
        work = Path(tmp)
        need_cluster = "hits" in parts or "stampede" in parts or args.takeover_on == "cluster"
        with servers(work, need_cluster) as s:
            for part in PARTS:
                if part in parts:
                    print(f"== {part}", flush=True)
                    results[part] = {"hits": hits, "stampede": stampede, "takeover": takeover}[part](
                        s, args, work)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
