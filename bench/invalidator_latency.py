"""Part (a) of the invalidator benchmark: commit -> applied at a paced write rate.

Throwaway MariaDB + Redis on loopback, the worker as a process (``python -m
invalidator``), a writer paced at ``rate`` single-row autocommit UPDATEs per second.
The users' keys are seeded with what a cold read stores (so an auditor, when on, finds
them right).  Wall-clock method: Redis keyspace notifications (``del`` / ``set`` events)
timestamped by a subscriber in this process; latency = notification received - UPDATE sent (so it
includes the commit).  Also the worker's own histogram received_to_applied (XID
received -> script acknowledged).
"""

from __future__ import annotations

import itertools
import threading
import time
import urllib.request

import pymysql
import redis

from bench.binlog_workload import ROOT, Stack
from cachetail.devstack import free_port, terminate
from cachetail.keyspace import Keyspace


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def fmt_ms(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (f"n={len(ms)} p50={pct(ms, 50):.2f} ms p90={pct(ms, 90):.2f} ms p99={pct(ms, 99):.2f} ms"
            f" max={max(ms):.2f} ms")


def metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        return r.read().decode()


def wait_metric(port: int, line: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if line in metrics_text(port):
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"worker: no {line!r} within {timeout_s} s")


def histogram_quantiles(text: str, name: str) -> str:
    buckets: list[tuple[float, float]] = []
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket{{"):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    total = buckets[-1][1] if buckets else 0
    out = []
    for q in (0.5, 0.9, 0.99):
        bound = next((le for le, c in buckets if c >= q * total), float("inf"))
        out.append(f"p{int(q * 100)}<={bound * 1000:g} ms")
    return f"n={int(total)} " + " ".join(out)


# ------------------------------------------------------------------ (a) latency

RUNS = itertools.count(1)


def cold_users(stack: Stack, ids: set[int]) -> dict[int, bytes]:
    """What the API stores for these users now (the auditor, if on, finds them right)."""
    from cachetail import config, schema

    conn = stack.db.connect(database="cachelab", init_command="SET time_zone = '+00:00'",
                            cursorclass=pymysql.cursors.DictCursor)
    try:
        user = schema.resolve(config.load(ROOT / "cachetail.toml"), conn, "cachelab").entities[0]
        with conn.cursor() as cur:
            cur.execute(f"SELECT {user.rows.select_list()} FROM users")
            return {row["id"]: user.rows.from_select(row) for row in cur.fetchall() if row["id"] in ids}
    finally:
        conn.close()


def latency(stack: Stack, rate: float, seconds: float, mode: str, audit: bool = False) -> list[float]:
    """Commit -> applied at ``rate`` single-row commits a second; the sent -> applied latencies."""
    prefix = f"lat{mode[0]}{'a' if audit else ''}{next(RUNS)}"  # a fresh worker: no catch-up
    ks = Keyspace(prefix=prefix)
    port = free_port()
    r = redis.Redis(host="127.0.0.1", port=stack.redis.port)
    r.config_set("notify-keyspace-events", "Eg$")  # keyevent notifications: del (generic), set (string)
    env = stack.env(prefix, INVALIDATOR_MODE=mode, INVALIDATOR_METRICS_PORT=str(port),
                    AUDIT="true" if audit else "false")
    proc = stack.worker(env, f"worker-latency-{mode}{'-audit' if audit else ''}.log")
    try:
        wait_metric(port, "cachetail_invalidator_streaming 1.0")
        n = int(rate * seconds)
        ids = list(range(1, n + 1)) if n <= 10000 else [1 + i % 10000 for i in range(n)]
        r.mset({ks.user(i): value for i, value in cold_users(stack, set(ids)).items()})
        seen: dict[bytes, float] = {}
        pubsub = r.pubsub()
        pubsub.psubscribe("__keyevent@0__:del", "__keyevent@0__:set")
        pubsub.get_message(timeout=1)
        pubsub.get_message(timeout=1)
        done = threading.Event()

        def listen() -> None:
            while not done.is_set():
                msg = pubsub.get_message(timeout=0.2)
                if msg and msg["type"] == "pmessage":
                    seen.setdefault(msg["data"], time.perf_counter())

        listener = threading.Thread(target=listen)
        listener.start()
        conn = stack.db.connect(database="cachelab")
        sent: dict[bytes, float] = {}
        returned: dict[bytes, float] = {}
        start = time.perf_counter()
        with conn.cursor() as cur:
            for k, i in enumerate(ids[:n]):
                target = start + k / rate
                while (now := time.perf_counter()) < target:
                    time.sleep(min(0.0005, target - now))
                key = ks.user(i).encode()
                seen.pop(key, None)
                sent[key] = time.perf_counter()
                cur.execute("UPDATE users SET full_name = CONCAT(LEFT(full_name, 60), '.') WHERE id = %s", (i,))
                returned[key] = time.perf_counter()
        elapsed = time.perf_counter() - start
        time.sleep(1.0)
        done.set()
        listener.join()
        conn.close()
        lat_sent = [seen[k] - t for k, t in sent.items() if k in seen]
        lat_ret = [max(0.0, seen[k] - t) for k, t in returned.items() if k in seen]
        missing = len(sent) - len(lat_sent)
        print(f"\n(a) latency, mode={mode}, auditor {'on' if audit else 'off'}: {n} single-row commits at"
              f" {n / elapsed:.0f}/s (target {rate:.0f}/s)")
        print(f"    commit sent     -> key {'gone' if mode == 'delete' else 'refreshed'}: {fmt_ms(lat_sent)}"
              f"  missing={missing}")
        print(f"    commit returned -> key {'gone' if mode == 'delete' else 'refreshed'}: {fmt_ms(lat_ret)}")
        text = metrics_text(port)
        print("    worker received_to_applied (histogram buckets):",
              histogram_quantiles(text, "cachetail_invalidator_received_to_applied_seconds"))
        print("    worker commit_to_applied (1 s binlog timestamps):",
              histogram_quantiles(text, "cachetail_invalidator_commit_to_applied_seconds"))
        if audit:
            checks = {line.split("{", 1)[1].split("}")[0]: float(line.rsplit(" ", 1)[1])
                      for line in text.splitlines() if line.startswith("cachetail_audit_checks_total{")}
            print(f"    auditor checks meanwhile: {checks}")
        return lat_sent
    finally:
        terminate(proc)


def audit_side_by_side(stack: Stack, rate: float, seconds: float) -> None:
    """Delete mode, the auditor off and on, in alternating rounds (off on on off)."""
    runs: dict[bool, list[float]] = {False: [], True: []}
    for audit in (False, True, True, False):
        runs[audit] += latency(stack, rate, seconds, "delete", audit)
    print("\ncommit sent -> key gone, delete mode, both rounds of each:")
    for audit, values in runs.items():
        print(f"    auditor {'on ' if audit else 'off'}: {fmt_ms(values)}")
