"""Issue 11's benchmark: database failovers, end to end, on throwaway servers started here.

Two MariaDB servers (GTID replication, ``log_slave_updates``) behind one address (a TCP
proxy standing in for the endpoint's DNS name), Redis, the invalidator and the API as
processes.  Each round, on one user that a reader keeps reading through the API
(cached, 1 h TTL, near-cache on):

1. baseline: an UPDATE on the primary, and the time from its commit until the reader sees it;
2. a planned failover: the replica catches up, the address refuses, the primary stops,
   the replica is promoted, the address moves to it (every open connection is cut);
3. an UPDATE on the new primary through the address at once, and the time from the
   address moving until the reader sees it;
4. the old primary comes back as a replica of the new one, for the next round.

Printed per round and as median / max, beside the invalidator's full invalidations and
its resumes by GTID over the run (from its /metrics).

    .venv/bin/python -m bench.dbfailover               # 10 failovers
    .venv/bin/python -m bench.dbfailover --rounds 3
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.api_vs_bare import servers as started  # noqa: E402 - after the sys.path set-up above
from cachetail.devstack import MariaDB, RedisServer, free_port, load_schema, terminate  # noqa: E402 - after the sys.path set-up above
from cachetail.tcpproxy import TcpProxy  # noqa: E402 - after the sys.path set-up above

USER = 77


def poll(predicate: Any, timeout_s: float, what: str, interval_s: float = 0.002) -> float:
    """Monotonic time at which ``predicate()`` first held."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(interval_s)
    raise SystemExit(f"dbfailover: no {what} within {timeout_s} s")


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("cachetail_invalidator_") and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def full_invalidations(metrics: dict[str, float]) -> float:
    return sum(v for k, v in metrics.items() if k.startswith("cachetail_invalidator_full_invalidations_total"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.dbfailover", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="failovers (default 10)")
    args = parser.parse_args(argv)
    api_pw, inv_pw, token = (secrets.token_urlsafe(12) for _ in range(3))
    with tempfile.TemporaryDirectory(prefix="dbfailover-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        dbs = [MariaDB(work / name, server_id=sid, extra_args=("--log-slave-updates",))
               for name, sid in (("a", 1), ("b", 2))]
        for db in dbs:
            stack.callback(db.stop)
            db.start()
        primary, replica = dbs
        load_schema(primary, api_pw, inv_pw)
        replica.replicate_from(primary)
        replica.wait_replicated(primary.gtid_pos(), 60)
        cache = RedisServer(work / "redis")
        stack.callback(cache.stop)
        cache.start()
        proxy = TcpProxy((primary.host, primary.port)).start()
        stack.callback(proxy.close)

        base = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "DB_HOST": proxy.host,
                "DB_PORT": str(proxy.port), "DB_NAME": "cachelab", "REDIS_HOST": cache.host,
                "REDIS_PORT": str(cache.port), "ADMIN_TOKEN": token}
        api_port, inv_port = free_port(), free_port()
        api_url = f"http://127.0.0.1:{api_port}"
        inv_env = {**base, "DB_USER": "cachetail_invalidator", "DB_PASSWORD": inv_pw,
                   "INVALIDATOR_SERVER_ID": "4242", "INVALIDATOR_METRICS_PORT": str(inv_port),
                   "INVALIDATOR_STATE_DIR": str(work / "state")}
        inv_log = open(work / "invalidator.log", "wb")
        stack.callback(inv_log.close)
        invalidator = subprocess.Popen([sys.executable, "-m", "invalidator", "--env-file", "/nonexistent"],
                                       env=inv_env, cwd=ROOT, stdout=inv_log, stderr=subprocess.STDOUT)
        stack.callback(terminate, invalidator)
        api_cmd = [sys.executable, "-m", "api", "--host", "127.0.0.1", "--port", str(api_port),
                   "--no-access-log", "--log-level", "warning"]
        stack.enter_context(started([(api_cmd, {**base, "DB_USER": "cachetail_api", "DB_PASSWORD": api_pw},
                                      f"{api_url}/health")], work))
        metrics_url = f"http://127.0.0.1:{inv_port}/metrics"
        poll(lambda: _streaming(metrics_url), 60, "invalidator streaming", 0.1)
        http = stack.enter_context(httpx.Client(base_url=api_url, timeout=5))
        before = scrape(metrics_url)

        def reader_sees(mark: str) -> bool:
            try:
                r = http.get(f"/user/{USER}")
            except httpx.HTTPError:
                return False
            return r.status_code == 200 and r.json().get("full_name") == mark

        def write(mark: str) -> None:
            conn = primary.connect(database="cachelab", host=proxy.host, port=proxy.port)
            with conn.cursor() as cur:
                cur.execute("UPDATE users SET full_name = %s WHERE id = %s", (mark, USER))
            conn.close()

        steady, moved = [], []
        print(f"{args.rounds} failovers; reader: GET /user/{USER} through the API, cached", flush=True)
        for n in range(args.rounds):
            mark = f"steady {n}"
            http.get(f"/user/{USER}")  # cached
            write(mark)
            started_at = time.monotonic()  # the commit returned
            steady.append(poll(lambda mark=mark: reader_sees(mark), 30, "steady change") - started_at)

            replica.wait_replicated(primary.gtid_pos())
            proxy.refuse()
            primary.stop()
            replica.promote()
            proxy.switch((replica.host, replica.port))
            moved_at = time.monotonic()
            primary, replica = replica, primary
            mark = f"after failover {n}"
            write(mark)
            moved.append(poll(lambda mark=mark: reader_sees(mark), 60, "change on the new primary") - moved_at)
            print(f"  round {n + 1}: steady {steady[-1] * 1000:.0f} ms; after the address moved"
                  f" {moved[-1] * 1000:.0f} ms (server_id {primary.server_id} now primary)", flush=True)
            replica.start()
            replica.replicate_from(primary, rejoin=True)
            replica.wait_replicated(primary.gtid_pos())

        after = scrape(metrics_url)
        gtid_resumes = (after.get('cachetail_invalidator_resumes_total{how="gtid"}', 0)
                        - before.get('cachetail_invalidator_resumes_total{how="gtid"}', 0))
        print()
        print(f"{'':34}{'median':>10}{'max':>10}")
        print(f"{'commit -> reader, no failover':34}{statistics.median(steady) * 1000:>8.0f}ms"
              f"{max(steady) * 1000:>8.0f}ms")
        print(f"{'address moved -> reader sees B':34}{statistics.median(moved) * 1000:>8.0f}ms"
              f"{max(moved) * 1000:>8.0f}ms")
        print(f"full invalidations during the run: {full_invalidations(after) - full_invalidations(before):.0f};"
              f" resumes by GTID: {gtid_resumes:.0f}; source changes:"
              f" {after.get('cachetail_invalidator_source_changes_total', 0):.0f}")
    return 0


def _streaming(url: str) -> bool:
    try:
        return scrape(url).get("cachetail_invalidator_streaming") == 1
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
