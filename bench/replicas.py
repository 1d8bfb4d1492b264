"""Issue 20's benchmark: fills from a lagging read replica, and reads of one's own write.

Throwaway servers started here: a MariaDB primary, its GTID replica (its replication
connection goes through a proxy that delays what the primary sends by the lag asked for,
so the replica is that far behind whatever the write rate), Redis, the invalidator and the
API (one uvicorn worker) as processes.  A writer updates random users on the primary all
along (``--write-rate``), so the invalidator's watermarks keep moving.

**misses** — cold reads of distinct users, one at a time, ``--misses`` per cell: the miss
latency (p50, p99) with the replica 0, 50 and 500 ms behind, for fills from the primary
(DB_READ_HOST unset: the baseline) and from the replica with the invalidator marking
watermarks slot by slot (the default) or one per Redis node (INVALIDATOR_WATERMARK_SLOTS_MAX=0:
the "wait for everything applied" variant), and how often a fill had to wait on the
replica, timed out (DB_READ_WAIT_MS, 100 ms unless ``--wait-ms``) and read the primary.

**own writes** — ``--writes`` times: read a user (cached), UPDATE it on the primary (on one
open connection, as an application would), read it at once through the API, without and
with ``Cachetail-Min-GTID: <@@last_gtid>``: how many
answers were older than the write, and the latency of that read; on the primary alone and
with the replica 50 ms behind.

    .venv/bin/python -m bench.replicas                  # ~4 minutes
    .venv/bin/python -m bench.replicas --quick          # a smoke run
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cachetail.devstack import MariaDB, RedisServer, free_port, load_schema, terminate  # noqa: E402 - after the sys.path set-up above
from cachetail.tcpproxy import TcpProxy  # noqa: E402 - after the sys.path set-up above

USERS = 10_000
VARIANTS = (("primary", "fills from the primary"), ("slots", "replica, slot watermarks"),
            ("node", "replica, one watermark per node"))


def scrape(url: str, prefix: str = "cachetail_") -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


class Bench:
    def __init__(self, work: Path, args: argparse.Namespace) -> None:
        self.work = work
        self.args = args
        self.api_pw, self.inv_pw, self.token = (secrets.token_urlsafe(12) for _ in range(3))
        self.stack = ExitStack()
        self.invalidator: subprocess.Popen[bytes] | None = None
        self.inv_variant = ""

    def __enter__(self) -> Bench:
        w, s = self.work, self.stack
        self.primary = MariaDB(w / "primary", server_id=1)
        self.replica = MariaDB(w / "replica", server_id=2)
        for db in (self.primary, self.replica):
            s.callback(db.stop)
            db.start()
        load_schema(self.primary, self.api_pw, self.inv_pw)
        self.proxy = TcpProxy((self.primary.host, self.primary.port)).start()
        s.callback(self.proxy.close)
        self.replica.query(f"CHANGE MASTER TO MASTER_HOST='{self.proxy.host}', MASTER_PORT={self.proxy.port},"
                           " MASTER_USER='root', MASTER_PASSWORD='', MASTER_USE_GTID=slave_pos,"
                           " MASTER_CONNECT_RETRY=1")
        self.replica.query("START SLAVE")
        self.replica.wait_replicated(self.primary.gtid_pos(), 120)
        self.redis = RedisServer(w / "redis")
        s.callback(self.redis.stop)
        self.redis.start()
        self.base = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "DB_NAME": "cachelab",
                     "DB_HOST": self.primary.host, "DB_PORT": str(self.primary.port),
                     "REDIS_HOST": self.redis.host, "REDIS_PORT": str(self.redis.port),
                     "ADMIN_TOKEN": self.token, "AUDIT": "false"}
        self.inv_port = free_port()
        s.callback(self.stop_invalidator)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    # ------------------------------------------------------------ the processes

    def lag(self, seconds: float) -> None:
        """The replica's replication connection delayed by ``seconds`` from now on."""
        self.proxy.delay_s = seconds
        self.proxy.cut()  # the replica reconnects (MASTER_CONNECT_RETRY=1) through the new delay
        self.replica.wait_replicated(self.primary.gtid_pos(), 120)

    def run_invalidator(self, variant: str) -> None:
        if self.invalidator is not None and self.inv_variant == variant:
            return
        self.stop_invalidator()
        env = {**self.base, "DB_USER": "cachetail_invalidator", "DB_PASSWORD": self.inv_pw,
               "INVALIDATOR_SERVER_ID": "4242", "INVALIDATOR_METRICS_PORT": str(self.inv_port),
               "INVALIDATOR_STATE_DIR": str(self.work / "state"),
               "INVALIDATOR_WATERMARK_SLOTS_MAX": "0" if variant == "node" else "64"}
        log = open(self.work / "invalidator.log", "ab")
        self.invalidator = subprocess.Popen([sys.executable, "-m", "invalidator", "--env-file", "/nonexistent"],
                                            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.inv_variant = variant
        url = f"http://127.0.0.1:{self.inv_port}/metrics"
        deadline = time.monotonic() + 60
        while True:
            try:
                if scrape(url).get("cachetail_invalidator_streaming") == 1:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("bench.replicas: the invalidator did not start (see invalidator.log)")
            time.sleep(0.1)

    def stop_invalidator(self) -> None:
        if self.invalidator is not None:
            terminate(self.invalidator)
            self.invalidator = None

    @contextmanager
    def api(self, replica: bool, wait_ms: int = 100) -> Iterator[tuple[httpx.Client, str]]:
        port = free_port()
        env = {**self.base, "DB_USER": "cachetail_api", "DB_PASSWORD": self.api_pw}
        if replica:
            env.update(DB_READ_HOST=self.replica.host, DB_READ_PORT=str(self.replica.port),
                       DB_READ_WAIT_MS=str(wait_ms))
        log = open(self.work / "api.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "api", "--host", "127.0.0.1", "--port", str(port),
                                 "--no-access-log", "--log-level", "warning"],
                                env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(url + "/health", timeout=1).status_code < 500:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("bench.replicas: the API did not start (see api.log)")
                time.sleep(0.1)
            with httpx.Client(base_url=url, timeout=10) as client:
                yield client, url + "/metrics"
        finally:
            terminate(proc)

    def clear(self, client: httpx.Client) -> None:
        client.post("/cache/clear", headers={"Authorization": f"Bearer {self.token}"}).raise_for_status()

    # ---------------------------------------------------------------- writing

    @contextmanager
    def writing(self, rate: float) -> Iterator[None]:
        """Random users updated on the primary at ``rate`` per second, in the background."""
        stop = threading.Event()

        def run() -> None:
            conn = self.primary.connect(database="cachelab")
            n = 0
            started = time.monotonic()
            with conn.cursor() as cur:
                while not stop.is_set():
                    cur.execute("UPDATE users SET full_name = CONCAT('w', %s) WHERE id = %s",
                                (n, random.randint(1, USERS)))
                    n += 1
                    stop.wait(max(0.0, started + n / rate - time.monotonic()))
            conn.close()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def write(self, conn: Any, user: int, name: str) -> str:
        """An UPDATE committed on ``conn`` (an application's open connection); its GTID."""
        with conn.cursor() as cur:
            cur.execute("UPDATE users SET full_name = %s WHERE id = %s", (name, user))
            cur.execute("SELECT @@last_gtid")
            return str(cur.fetchone()[0])


# ------------------------------------------------------------------- the parts


def misses(bench: Bench, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    ids = list(range(1, USERS + 1))
    for lag_ms in args.lags:
        bench.lag(lag_ms / 1000)
        for variant, label in VARIANTS:
            bench.run_invalidator("node" if variant == "node" else "slots")
            with (bench.api(replica=variant != "primary", wait_ms=args.wait_ms) as (client, metrics_url),
                  bench.writing(args.write_rate)):
                bench.clear(client)
                random.shuffle(ids)
                before = scrape(metrics_url)
                took = []
                for user in ids[:args.misses]:
                    started = time.perf_counter()
                    response = client.get(f"/user/{user}")
                    took.append(time.perf_counter() - started)
                    if response.headers.get("x-cache") != "MISS":
                        raise SystemExit(f"bench.replicas: /user/{user} was not a miss")
                after = scrape(metrics_url)

            def grew(name: str) -> float:
                return after.get(name, 0.0) - before.get(name, 0.0)  # noqa: B023 - used within this iteration only

            waited = grew('cachetail_replica_waits_total{result="ok"}')
            timed_out = grew('cachetail_replica_waits_total{result="timeout"}')
            primary = sum(grew(k) for k in after if k.startswith("cachetail_primary_reads_total"))
            rows.append({"lag_ms": lag_ms, "variant": variant, "label": label, "n": len(took),
                         "p50_ms": pct(took, 50), "p99_ms": pct(took, 99),
                         "waited": waited, "timed_out": timed_out, "primary_reads": primary})
            r = rows[-1]
            print(f"  lag {lag_ms:>3} ms  {label:33} p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:7.2f} ms"
                  f"  waited {waited / len(took):6.1%}  timed out {timed_out / len(took):6.1%}", flush=True)
    return rows


def own_writes(bench: Bench, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    bench.run_invalidator("slots")
    writer = bench.primary.connect(database="cachelab")
    for replica, lag_ms in ((False, 0), (True, 50)):
        bench.lag(lag_ms / 1000)
        with bench.api(replica=replica, wait_ms=args.wait_ms) as (client, _):
            for header in (False, True):
                stale, took = 0, []
                for n in range(args.writes):
                    user = random.randint(1, USERS)
                    client.get(f"/user/{user}")  # cached
                    name = f"own {secrets.token_hex(4)} {n}"
                    written = bench.write(writer, user, name)
                    started = time.perf_counter()
                    response = client.get(f"/user/{user}",
                                          headers={"Cachetail-Min-GTID": written} if header else None)
                    took.append(time.perf_counter() - started)
                    stale += response.json()["full_name"] != name
                where = "replica 50 ms behind" if replica else "primary only"
                rows.append({"where": where, "header": header, "n": args.writes, "stale": stale,
                             "p50_ms": pct(took, 50), "p99_ms": pct(took, 99)})
                print(f"  {where:21} {'with' if header else 'without':>7} the header: stale {stale:3}/{args.writes}"
                      f"  p50 {rows[-1]['p50_ms']:6.2f} ms  p99 {rows[-1]['p99_ms']:6.2f} ms", flush=True)
    writer.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.replicas", description=__doc__.splitlines()[0])
    parser.add_argument("--misses", type=int, default=400, help="cold reads per cell (default 400)")
    parser.add_argument("--writes", type=int, default=200, help="write-then-read rounds (default 200)")
    parser.add_argument("--write-rate", type=float, default=200.0, help="background UPDATEs/s (default 200)")
    parser.add_argument("--lags", type=int, nargs="+", default=[0, 50, 500], help="replica lags in ms")
    parser.add_argument("--wait-ms", type=int, default=100, help="the API's DB_READ_WAIT_MS (default 100)")
    parser.add_argument("--quick", action="store_true", help="few reads per cell: a smoke run")
    parser.add_argument("--parts", default="misses,own", help="misses, own (default both)")
    args = parser.parse_args(argv)
    if args.quick:
        args.misses, args.writes = 30, 20
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp, Bench(Path(tmp), args) as bench:
        parts = args.parts.split(",")
        if "misses" in parts:
            print(f"misses: cold reads of distinct users, one at a time, {args.misses} per cell, "
                  f"{args.write_rate:g} UPDATEs/s on the primary meanwhile", flush=True)
            table = misses(bench, args)
            base = {r["lag_ms"]: r for r in table if r["variant"] == "primary"}
            print("\nmiss latency against fills from the primary (same lag, same run):")
            for r in table:
                if r["variant"] != "primary":
                    b = base[r["lag_ms"]]
                    print(f"  lag {r['lag_ms']:>3} ms  {r['label']:33} p50 {r['p50_ms'] / b['p50_ms']:5.2f}x"
                          f"  p99 {r['p99_ms'] / b['p99_ms']:5.2f}x")
        if "own" in parts:
            print(f"\nown writes: read, UPDATE, read at once; {args.writes} rounds each", flush=True)
            own_writes(bench, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
