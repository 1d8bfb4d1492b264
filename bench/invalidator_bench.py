"""Invalidator benchmark: prints figures, asserts nothing.

    .venv/bin/python bench/invalidator_bench.py                        # all three parts
    .venv/bin/python bench/invalidator_bench.py --part latency         # (a) only
    .venv/bin/python bench/invalidator_bench.py --part throughput --rows 100000 --profile
    .venv/bin/python bench/invalidator_bench.py --part catchup --catchup-rows 1000000

(a) latency (bench/invalidator_latency.py): the worker as a process, --rate single-row
    commits per second, commit sent -> key gone/refreshed (Redis keyspace notifications);
    --audit on|both: with the consistency auditor on, or off and on in alternating rounds.
(b) throughput: --rows changed rows per case, in transactions of 100 rows, on ``users``
    (mapped) and ``bench_other`` (the same table, unmapped), as single-row events and as
    multi-row events (one UPDATE of 100 rows per transaction); each range is then read
    side by side, in alternating order, by the C decoder (``mariadb-binlog -v
    --read-from-remote-server``), the bare python-mysql-replication loop, our decode path
    (no Redis) in delete and refresh mode, and the real worker with Redis.  Rows/s, and
    ratios against the C decoder and the bare loop.  --profile prints cProfile of ours.
(c) catch-up: --catchup-rows single-row changes of ``users`` written while the worker is
    stopped, then the worker started from its saved position: the time until it caught
    up, beside the wall-clock time the writes themselves took.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.binlog_readers import (  # noqa: E402 - after the sys.path set-up above
    c_decoder, ours, profile_text, read_bare, read_c, run_worker, timed,
)
from bench.binlog_workload import SHAPES, Range, Stack  # noqa: E402 - after the sys.path set-up above
from bench.invalidator_latency import audit_side_by_side, latency, wait_metric  # noqa: E402 - after the sys.path set-up above
from cachetail.devstack import free_port, terminate  # noqa: E402 - after the sys.path set-up above
from cachetail.keyspace import Keyspace  # noqa: E402 - after the sys.path set-up above

import redis  # noqa: E402 - after the sys.path set-up above

READERS = ("c", "bare", "ours-delete", "ours-refresh", "worker-delete", "worker-refresh")


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cpus"


def read_once(stack: Stack, rng: Range, reader: str, run: int, before: Path | None = None) -> float:
    if reader == "c":
        return timed(lambda: read_c(stack, rng))[1]
    if reader == "bare":
        rows, took = timed(lambda: read_bare(stack, rng))
        if rows != rng.rows:
            print(f"    ! bare loop read {rows} rows of {rng.rows}")
        return took
    kind, mode = reader.split("-")
    if kind == "before":
        assert before is not None
        return process_catch_up(stack, rng, mode, before)
    if kind == "ours":
        return timed(ours(stack, rng, mode))[1]
    return run_worker(stack, rng, mode, prefix=f"w{mode[0]}{run}{rng.table[0]}{rng.shape[0]}")


def throughput(stack: Stack, rows: int, runs: int, profile: bool, before: Path | None = None) -> None:
    print(f"\n(b) throughput: {rows:,} changed rows per case, transactions of 100 rows; C decoder {c_decoder()}")
    ranges = []
    for table in ("users", "bench_other"):
        for shape in SHAPES:
            rng = stack.write(table, shape, rows)
            ranges.append(rng)
            print(f"    wrote {rng.label:<18} {rng.rows:,} rows in {rng.write_s:.1f} s"
                  f" ({rng.rows / rng.write_s:,.0f} rows/s), {rng.end[1] - rng.begin[1]:,} binlog bytes")
    print(f"    {load_average()} before reading")
    results: dict[tuple[str, str], list[float]] = {}
    for rng in ranges:
        readers = [r for r in READERS if rng.table == "users" or not r.endswith("refresh")]
        if before is not None:
            readers.append("before-delete")
        for run in range(runs):
            order = readers if run % 2 == 0 else readers[::-1]
            for reader in order:
                results.setdefault((rng.label, reader), []).append(read_once(stack, rng, reader, run, before))
    print(f"    {load_average()} after reading")
    print(f"\n    rows/s (best of {runs}; readers in alternating order)   ratio to the C decoder | to the bare loop")
    for rng in ranges:
        best = {reader: rng.rows / min(times) for (label, reader), times in results.items() if label == rng.label}
        print(f"    {rng.label}:")
        for reader, rate in best.items():
            print(f"      {reader:<15} {rate:>11,.0f}   {rate / best['c']:6.2f}x | {rate / best['bare']:6.2f}x")
    if profile:  # runs of their own: the profiler's overhead is in no figure above
        for rng in ranges:
            for mode in ("delete", "refresh") if rng.table == "users" else ("delete",):
                prof = cProfile.Profile()
                run_worker(stack, rng, mode, prefix=f"p{mode[0]}{rng.table[0]}{rng.shape[0]}", profile=prof)
                print(f"\n    --- profile: worker-{mode} {rng.label} (tottime) ---\n{profile_text(prof)}")


def process_catch_up(stack: Stack, rng: Range, mode: str, checkout: Path) -> float:
    """``python -m invalidator`` of another checkout (its own .venv) from a saved position at
    the range's start: seconds from its first event (its metrics say streaming; polled every
    0.1 s) until the position in Redis reached the end."""
    ks = Keyspace(prefix=f"before{rng.table[0]}{rng.shape[0]}{time.monotonic_ns() % 10**6}")
    r = redis.Redis(host="127.0.0.1", port=stack.redis.port)
    r.set(ks.invalidator_position(), json.dumps({"log_file": rng.begin[0], "log_pos": rng.begin[1],
                                                 "source_id": stack.server_id()}))
    port = free_port()
    env = stack.env(ks.prefix, INVALIDATOR_MODE=mode, INVALIDATOR_METRICS_PORT=str(port),
                    INVALIDATOR_SERVER_ID="905")
    proc = subprocess.Popen([str(checkout / ".venv/bin/python"), "-m", "invalidator", "--env-file", "/nonexistent"],
                            env=env, cwd=checkout, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_metric(port, "cachetail_invalidator_streaming 1.0")
        started = time.perf_counter()
        while True:
            raw = r.get(ks.invalidator_position())
            pos = json.loads(raw) if raw else {"log_file": "", "log_pos": 0}
            if (pos["log_file"], pos["log_pos"]) >= rng.end:
                return time.perf_counter() - started
            if proc.poll() is not None:
                raise RuntimeError(f"the worker of {checkout} exited")
            time.sleep(0.05)
    finally:
        terminate(proc)
        r.close()


def catch_up(stack: Stack, rows: int, mode: str, before: Path | None = None) -> None:
    print(f"\n(c) catch-up: {rows:,} single-row changes of users (transactions of 100) written while the"
          f" worker is stopped, mode={mode}")
    rng = stack.write("users", "single", rows)
    print(f"    the writes took {rng.write_s:.1f} s ({rng.rows / rng.write_s:,.0f} rows/s)")
    t_c = timed(lambda: read_c(stack, rng))[1]
    took = run_worker(stack, rng, mode, prefix="catchup")
    print(f"    the worker caught up in {took:.1f} s ({rng.rows / took:,.0f} rows/s):"
          f" {took / rng.write_s:.2f}x the time of the writes; the C decoder read the range in {t_c:.1f} s")
    if before is not None:
        took_before = process_catch_up(stack, rng, mode, before)
        print(f"    the worker of {before} caught up in {took_before:.1f} s"
              f" ({rng.rows / took_before:,.0f} rows/s)")
    print(f"    {load_average()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--part", choices=("latency", "throughput", "catchup", "all"), default="all")
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rows", type=int, default=100_000, help="rows per throughput case")
    parser.add_argument("--runs", type=int, default=3, help="reads of each range by each reader")
    parser.add_argument("--catchup-rows", type=int, default=1_000_000)
    parser.add_argument("--mode", choices=("delete", "refresh"), default="delete", help="catch-up mode")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--audit", choices=("off", "on", "both"), default="off",
                        help="latency with the consistency auditor off, on, or both side by side")
    parser.add_argument("--before", type=Path, metavar="CHECKOUT",
                        help="also time the worker of another checkout with its own .venv (e.g. main's"
                             " worktree), as a process, in delete mode: 'before-delete'")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="inv-bench-") as tmp, Stack(Path(tmp)) as stack:
        print(f"MariaDB on 127.0.0.1:{stack.db.port}, Redis on 127.0.0.1:{stack.redis.port};"
              f" {load_average()}; {time.strftime('%Y-%m-%d %H:%M:%S')}")
        if args.part in ("latency", "all"):
            if args.audit == "both":
                audit_side_by_side(stack, args.rate, args.seconds)
            else:
                latency(stack, args.rate, args.seconds, "delete", args.audit == "on")
                latency(stack, args.rate, args.seconds, "refresh", args.audit == "on")
        if args.part in ("throughput", "all"):
            throughput(stack, args.rows, args.runs, args.profile, args.before)
        if args.part in ("catchup", "all"):
            catch_up(stack, args.catchup_rows, args.mode, args.before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
