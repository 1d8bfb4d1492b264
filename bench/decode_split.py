"""Would a second process for decoding help?  Measurements for the design note (issue 13).

    .venv/bin/python -m bench.decode_split                 # 200,000 rows per shape, ~1 min
    .venv/bin/python -m bench.decode_split --rows 50000

1. CPU of each process while the real worker catches up (``/proc/<pid>/stat``): the
   worker, MariaDB (its binlog dump thread) and Redis; busy cores = CPU seconds / wall.
2. The worker's stages, one after another in one thread, per row: reading and filtering
   the stream with the rows events' headers (``read``), the row images (``parse``), the
   rules into a batch (``rules``), and what a split would add: pickling each
   transaction's batch and unpickling it (``ipc``).
3. A prototype split: a child process reads and decodes, joins transactions into groups of
   5,000 keys (as the worker does while behind) and sends each through a pipe; this process
   applies them to Redis (one script per group).  Beside it the same work in one process,
   in four alternating rounds.  Rows per second of each.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import pickle
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from pymysqlreplication.event import XidEvent  # noqa: E402

from bench.binlog_readers import run_worker  # noqa: E402
from bench.binlog_workload import SHAPES, Range, Stack  # noqa: E402

DELETE_ALL = "for i, k in ipairs(KEYS) do redis.call('DEL', k) end return #KEYS"
GROUP_KEYS = 5000  # Group.MAX_KEYS
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def transactions(env: dict[str, str], rng: Range, stages: dict[str, float] | None = None
                 ) -> Iterator[list[tuple[str, bytes]]]:
    """The ops of each transaction of the range, through the worker's path (delete mode)."""
    from invalidator import decode
    from invalidator.apply import Batch
    from invalidator.catalog import Followed, load_catalog
    from invalidator.packets import RowsPacket
    from invalidator.position import Position
    from invalidator.settings import InvalidatorSettings
    from invalidator.stream import control_connection, open_stream

    settings = InvalidatorSettings.from_env(env)
    conn = control_connection(settings)
    try:
        followed = Followed(load_catalog(conn, str(settings.config_path), "cachelab"), settings.keyspace)
    finally:
        conn.close()

    def claim(table_map: Any) -> bool:
        rules = followed.rules.get(table_map.table)
        return rules is not None and decode.claims(table_map, rules.needed, False)

    stream = open_stream(settings, Position(*rng.begin), tables=followed.catalog.tables, claim=claim)
    batch = Batch(False)
    try:
        for event in stream:
            if type(event) is RowsPacket:
                decode.add_packet(batch, event, followed.rules, lambda sql, args: ())
            elif isinstance(event, XidEvent):
                yield list(batch.ops.items())
                batch = Batch(False)
            if (stream.log_file, stream.log_pos) >= rng.end:
                break
    finally:
        stream.close()


def stages(env: dict[str, str], rng: Range) -> dict[str, float]:
    """Microseconds per row of each stage, run one after another."""
    from invalidator import decode
    from invalidator.apply import Batch
    from invalidator.catalog import Followed, load_catalog
    from invalidator.packets import RowsPacket
    from invalidator.position import Position
    from invalidator.settings import InvalidatorSettings
    from invalidator.stream import control_connection, open_stream

    settings = InvalidatorSettings.from_env(env)
    conn = control_connection(settings)
    followed = Followed(load_catalog(conn, str(settings.config_path), "cachelab"), settings.keyspace)
    conn.close()
    rules = followed.rules
    claim = (lambda table_map: decode.claims(table_map, rules[table_map.table].needed, False))
    packets: list[Any] = []
    started = time.perf_counter()
    stream = open_stream(settings, Position(*rng.begin), tables=followed.catalog.tables, claim=claim)
    for event in stream:
        if type(event) is RowsPacket:
            packets.append(event)
        elif isinstance(event, XidEvent):
            packets.append(None)
        if (stream.log_file, stream.log_pos) >= rng.end:
            break
    stream.close()
    read = time.perf_counter() - started
    usable = []
    for p in packets:
        if p is not None:
            found = decode._usable(p.table_map, rules[p.table].needed, False)
            assert found is not None, "claimed rows are readable"
            usable.append((p, found))
    started = time.perf_counter()
    parsed = [(p, decode._rows(found, False, p.operation, p.data, p.start, p.end)) for p, found in usable]
    parse = time.perf_counter() - started
    started = time.perf_counter()
    batches, batch = [], Batch(False)
    rows_of = iter(parsed)
    for p in packets:
        if p is None:
            batches.append(list(batch.ops.items()))
            batch = Batch(False)
        else:
            _, rows = next(rows_of)
            rules[p.table].apply_rows(batch, rows, lambda sql, args: ())
    rules_s = time.perf_counter() - started
    started = time.perf_counter()
    for ops in batches:
        pickle.loads(pickle.dumps(ops, protocol=pickle.HIGHEST_PROTOCOL))
    ipc = time.perf_counter() - started
    n = rng.rows / 1e6
    return {"read": read / n, "parse": parse / n, "rules": rules_s / n, "ipc": ipc / n}


def groups(source: Iterator[list[tuple[str, bytes]]]) -> Iterator[list[tuple[str, bytes]]]:
    """Transactions joined until GROUP_KEYS keys, as the worker's Group joins them while behind."""
    group: list[tuple[str, bytes]] = []
    for ops in source:
        group += ops
        if len(group) >= GROUP_KEYS:
            yield group
            group = []
    if group:
        yield group


def _child(env: dict[str, str], rng: Range, out: Connection) -> None:
    for ops in groups(transactions(env, rng)):
        out.send_bytes(pickle.dumps(ops, protocol=pickle.HIGHEST_PROTOCOL))
    out.send_bytes(b"")
    out.close()


def apply_all(client: redis.Redis, source: Iterator[list[tuple[str, bytes]]]) -> None:
    script = client.register_script(DELETE_ALL)
    for ops in source:
        script(keys=[k for k, _ in ops])


def one_process(env: dict[str, str], rng: Range, port: int) -> float:
    client = redis.Redis(port=port)
    started = time.perf_counter()
    apply_all(client, groups(transactions(env, rng)))
    return time.perf_counter() - started


def two_processes(env: dict[str, str], rng: Range, port: int) -> float:
    client = redis.Redis(port=port)
    ctx = mp.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(env, rng, send))
    started = time.perf_counter()
    child.start()
    send.close()

    def received() -> Iterator[list[tuple[str, bytes]]]:
        while data := receive.recv_bytes():
            yield pickle.loads(data)

    apply_all(client, received())
    took = time.perf_counter() - started
    child.join()
    return took


def worker_cpu(stack: Stack, rng: Range) -> tuple[float, dict[str, float]]:
    pids = {"worker": os.getpid(), "mariadb": stack.db.proc.pid, "redis": stack.redis.proc.pid}  # type: ignore[union-attr]
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.perf_counter()
    run_worker(stack, rng, "delete", prefix=f"cpu{rng.shape[0]}")
    wall = time.perf_counter() - started  # includes the worker's start-up: CPU shares are an upper bound
    return wall, {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="split-") as tmp, Stack(Path(tmp)) as stack:
        env = stack.env("split", INVALIDATOR_SERVER_ID="904")
        one, five, _ = os.getloadavg()
        print(f"cpus={os.cpu_count()} load average {one:.2f}/{five:.2f}")
        for shape in SHAPES:
            rng = stack.write("users", shape, args.rows)
            print(f"\nusers/{shape}: {rng.rows:,} rows")
            wall, cpu = worker_cpu(stack, rng)
            print(f"  1. worker catch-up {wall:.2f} s wall; CPU s: " +
                  ", ".join(f"{k} {v:.2f} ({v / wall:.0%})" for k, v in cpu.items()) +
                  f"; busy cores {sum(cpu.values()) / wall:.2f}")
            cost = stages(env, rng)
            print("  2. us per row: " + ", ".join(f"{k} {v:.2f}" for k, v in cost.items()))
            ones: list[float] = []
            twos: list[float] = []
            for first in (True, False, False, True):  # alternating: one two two one
                for which in ((one_process, ones), (two_processes, twos))[::1 if first else -1]:
                    which[1].append(rng.rows / which[0](env, rng, stack.redis.port))
            one_m, two_m = statistics.median(ones), statistics.median(twos)
            print(f"  3. median of 4 rounds, alternating: one process {one_m:,.0f} rows/s; decode in a child,"
                  f" Redis here: {two_m:,.0f} rows/s ({two_m / one_m:.2f}x); rounds "
                  + ", ".join(f"{b / a:.2f}" for a, b in zip(ones, twos)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
