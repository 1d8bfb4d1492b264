"""Invalidator benchmark: prints figures, asserts nothing.

    .venv/bin/python bench/invalidator_bench.py                 # both parts
    .venv/bin/python bench/invalidator_bench.py --part latency  # (a) only
    .venv/bin/python bench/invalidator_bench.py --part throughput --commits 200000 --profile

(a) latency: throwaway MariaDB + Redis on loopback, the worker as a process
    (`python -m invalidator`), a writer paced at --rate single-row autocommit
    UPDATEs per second.  Wall-clock method: Redis keyspace notifications
    (``del`` / ``set`` events) timestamped by a subscriber in this process;
    latency = notification received - UPDATE sent (so it includes the commit).
    Also the worker's own histogram received_to_applied (XID received -> EXEC
    acknowledged).
(b) throughput: --commits single-row commits on users (and as many on a table
    cachetail does not cache), written by a stored procedure, then read from
    the binlog side by side, same process, same binlog:
      bare   - BinLogStreamReader(only_events=[rows events]) touching ev.rows
      ours   - the worker's stream options and decode path (no Redis)
      worker - the real worker catching up from a saved position, with Redis
    Figures are row events per second.  --profile prints the top functions of
    bare and ours (cProfile, tottime).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import json
import os
import pstats
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pymysql  # noqa: E402
import redis  # noqa: E402
from pymysqlreplication import BinLogStreamReader  # noqa: E402
from pymysqlreplication.event import XidEvent  # noqa: E402
from pymysqlreplication.row_event import (  # noqa: E402
    DeleteRowsEvent, RowsEvent, UpdateRowsEvent, WriteRowsEvent,
)

from cachetail.devstack import MariaDB, RedisServer, free_port, load_schema, terminate  # noqa: E402
from cachetail.keyspace import Keyspace  # noqa: E402

FAST_DB = ("--innodb-flush-log-at-trx-commit=2", "--sync-binlog=0", "--max-binlog-size=1G")
INV_PW = "bench-inv-pw"


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def fmt_ms(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (f"n={len(ms)} p50={pct(ms, 50):.2f} ms p90={pct(ms, 90):.2f} ms p99={pct(ms, 99):.2f} ms"
            f" max={max(ms):.2f} ms")


def master(conn: Any) -> tuple[str, int]:
    with conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        row = cur.fetchone()
    return str(row[0]), int(row[1])


class Stack:
    def __init__(self, base: Path) -> None:
        self.db = MariaDB(base / "mariadb", server_id=1, extra_args=FAST_DB)
        self.redis = RedisServer(base / "redis")
        self.base = base

    def __enter__(self) -> Stack:
        self.db.start()
        load_schema(self.db, "bench-api-pw", INV_PW)
        self.redis.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.redis.stop()
        self.db.stop()

    def env(self, prefix: str, **extra: str) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", ""), "DB_HOST": "127.0.0.1", "DB_PORT": str(self.db.port),
                "DB_USER": "cachetail_invalidator", "DB_PASSWORD": INV_PW, "DB_NAME": "cachelab",
                "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(self.redis.port), "CACHE_KEY_PREFIX": prefix,
                "INVALIDATOR_SERVER_ID": str(5000 + len(prefix) + int(time.time()) % 1000),
                "INVALIDATOR_STATE_DIR": str(self.base / "state"), "INVALIDATOR_HEARTBEAT_S": "1",
                "PYTHONUNBUFFERED": "1", **extra}

    def worker(self, env: dict[str, str], log_name: str) -> subprocess.Popen[bytes]:
        log = open(self.base / log_name, "wb")
        return subprocess.Popen([sys.executable, "-m", "invalidator", "--env-file", "/nonexistent"],
                                env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


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


# --------------------------------------------------------------- (b) throughput

PROC = """
CREATE PROCEDURE bench_writes(IN n INT, IN tbl VARCHAR(10))
BEGIN
  DECLARE i INT DEFAULT 0;
  WHILE i < n DO
    IF tbl = 'users' THEN
      UPDATE users SET full_name = CONCAT('Bench ', i) WHERE id = 1 + (i MOD 10000);
    ELSE
      UPDATE bench_other SET v = i, note = CONCAT('note ', i) WHERE id = 1 + (i MOD 1000);
    END IF;
    SET i = i + 1;
  END WHILE;
END
"""


def generate(stack: Stack, commits: int, table: str) -> tuple[tuple[str, int], tuple[str, int], float]:
    conn = stack.db.connect(database="cachelab")
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS bench_other (id INT PRIMARY KEY, v INT, note VARCHAR(100),"
                    " created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP) ENGINE=InnoDB")
        cur.execute("INSERT IGNORE INTO bench_other (id, v, note) SELECT id, 0, 'x' FROM users WHERE id <= 1000")
        cur.execute("DROP PROCEDURE IF EXISTS bench_writes")
        cur.execute(PROC)
        begin = master(conn)
        t = time.perf_counter()
        cur.execute("CALL bench_writes(%s, %s)", (commits, table))
        took = time.perf_counter() - t
        end = master(conn)
    conn.close()
    return begin, end, took


def conn_settings(stack: Stack) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": stack.db.port, "user": "cachetail_invalidator", "password": INV_PW}


def read_bare(stack: Stack, begin: tuple[str, int], end: tuple[str, int]) -> tuple[int, int]:
    stream = BinLogStreamReader(conn_settings(stack), server_id=901, blocking=False, resume_stream=True,
                                log_file=begin[0], log_pos=begin[1],
                                only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent],
                                enable_logging=False)
    events = rows = 0
    for ev in stream:
        rows += len(ev.rows)
        events += 1
        if (stream.log_file, stream.log_pos) >= end:
            break
    stream.close()
    return events, rows


def read_ours(stack: Stack, begin: tuple[str, int], end: tuple[str, int], mode: str) -> tuple[int, int]:
    from invalidator import decode
    from invalidator.apply import Batch
    from invalidator.position import Position
    from invalidator.settings import InvalidatorSettings
    from invalidator.stream import open_stream

    from invalidator.catalog import Followed, Weights, load_catalog
    from invalidator.stream import control_connection

    settings = InvalidatorSettings.from_env(stack.env("thr", INVALIDATOR_SERVER_ID="902", INVALIDATOR_MODE=mode))
    conn = control_connection(settings)
    followed = Followed(load_catalog(conn, str(settings.config_path), settings.mysql.database), settings.keyspace)
    conn.close()
    weights = Weights(lambda: control_connection(settings))
    stream = open_stream(settings, Position(*begin), tables=followed.catalog.tables)
    batch = Batch(mode == "refresh")
    events = keys = 0
    try:
        for ev in stream:
            if isinstance(ev, RowsEvent):
                decode.add_rows(batch, ev, followed.rules, weights)
                events += 1
            elif isinstance(ev, XidEvent):
                keys += len(batch.ops)
                batch = Batch(mode == "refresh")
            if (stream.log_file, stream.log_pos) >= end:
                break
    finally:
        stream.close()
        weights.close()
    return events, keys


def timed(label: str, fn: Any, profile: bool) -> tuple[Any, float]:
    prof = cProfile.Profile() if profile else None
    t = time.perf_counter()
    if prof:
        prof.enable()
    result = fn()
    if prof:
        prof.disable()
    took = time.perf_counter() - t
    if prof:
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(10)
        body = "\n".join(line for line in out.getvalue().splitlines() if line.strip())
        print(f"\n    --- profile: {label} (tottime, top 10) ---\n" + "\n".join(body.splitlines()[3:16]))
    return result, took


def worker_catch_up(stack: Stack, begin: tuple[str, int], end: tuple[str, int], mode: str) -> float:
    prefix = f"thw{mode[0]}"
    ks = Keyspace(prefix=prefix)
    r = redis.Redis(host="127.0.0.1", port=stack.redis.port)
    conn = stack.db.connect()
    with conn.cursor() as cur:
        cur.execute("SELECT @@server_id")
        sid = cur.fetchone()[0]
    conn.close()
    r.set(ks.invalidator_position(), json.dumps({"log_file": begin[0], "log_pos": begin[1], "source_id": sid}))
    port = free_port()
    t = time.perf_counter()
    proc = stack.worker(stack.env(prefix, INVALIDATOR_MODE=mode, INVALIDATOR_METRICS_PORT=str(port)),
                        f"worker-catchup-{mode}.log")
    try:
        while True:
            raw = r.get(ks.invalidator_position())
            pos = json.loads(raw) if raw else {"log_file": "", "log_pos": 0}
            if (pos["log_file"], pos["log_pos"]) >= end:
                return time.perf_counter() - t
            if proc.poll() is not None:
                raise RuntimeError("worker exited; see its log")
            time.sleep(0.05)
    finally:
        terminate(proc)


def throughput(stack: Stack, commits: int, profile: bool, mode: str) -> None:
    print(f"\n(b) throughput: generating {commits} single-row commits on users and {commits} on bench_other ...")
    users_begin, users_end, took_u = generate(stack, commits, "users")
    other_begin, other_end, took_o = generate(stack, commits, "other")
    print(f"    written at {commits / took_u:.0f}/s (users) and {commits / took_o:.0f}/s (bench_other)")
    (ev_b, rows_b), t_bare = timed("bare", lambda: read_bare(stack, users_begin, users_end), profile)
    (ev_o, keys_o), t_ours = timed("ours", lambda: read_ours(stack, users_begin, users_end, mode), profile)
    (ev_x, _), t_other = timed("ours/other", lambda: read_ours(stack, other_begin, other_end, mode), False)
    (ev_xb, _), t_other_bare = timed("bare/other", lambda: read_bare(stack, other_begin, other_end), False)
    print(f"\n    users, mode={mode}")
    print(f"    bare python-mysql-replication loop: {ev_b} row events in {t_bare:.1f} s = {ev_b / t_bare:,.0f}/s")
    print(f"    ours (worker decode path, no Redis): {ev_o} row events in {t_ours:.1f} s = {ev_o / t_ours:,.0f}/s"
          f"  -> {t_bare / t_ours:.2f}x the bare loop")
    print(f"    unmapped table (bench_other): ours {commits / t_other:,.0f} commits/s"
          f" ({t_other / commits * 1e6:.1f} us each) vs mapped users {ev_o / t_ours:,.0f}/s"
          f" ({t_ours / max(ev_o, 1) * 1e6:.1f} us each); bare loop on it {ev_xb / t_other_bare:,.0f}/s")
    t_worker = worker_catch_up(stack, users_begin, users_end, mode)
    print(f"    worker end to end (Redis MULTI/EXEC per transaction, position saved): {commits} commits"
          f" caught up in {t_worker:.1f} s = {commits / t_worker:,.0f}/s")


def audit_side_by_side(stack: Stack, rate: float, seconds: float) -> None:
    """Delete mode, the auditor off and on, in alternating rounds (off on on off)."""
    runs: dict[bool, list[float]] = {False: [], True: []}
    for audit in (False, True, True, False):
        runs[audit] += latency(stack, rate, seconds, "delete", audit)
    print("\ncommit sent -> key gone, delete mode, both rounds of each:")
    for audit, values in runs.items():
        print(f"    auditor {'on ' if audit else 'off'}: {fmt_ms(values)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("latency", "throughput", "all"), default="all")
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--commits", type=int, default=200_000)
    parser.add_argument("--mode", choices=("delete", "refresh"), default="delete")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--audit", choices=("off", "on", "both"), default="off",
                        help="latency with the consistency auditor off, on, or both side by side")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="inv-bench-") as tmp, Stack(Path(tmp)) as stack:
        print(f"MariaDB on 127.0.0.1:{stack.db.port}, Redis on 127.0.0.1:{stack.redis.port}; cpus={os.cpu_count()}")
        if args.part in ("latency", "all"):
            if args.audit == "both":
                audit_side_by_side(stack, args.rate, args.seconds)
            else:
                latency(stack, args.rate, args.seconds, "delete", args.audit == "on")
                latency(stack, args.rate, args.seconds, "refresh", args.audit == "on")
        if args.part in ("throughput", "all"):
            throughput(stack, args.commits, args.profile, args.mode)
    return 0


if __name__ == "__main__":
    sys.exit(main())
