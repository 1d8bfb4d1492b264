"""Readers of one binlog range, timed side by side: the C decoder, the bare library loop, ours.

- ``c``: ``mariadb-binlog -v --read-from-remote-server`` (the server's own C decoder, from
  the installed client package), every row printed as pseudo-SQL, output to /dev/null;
- ``bare``: ``BinLogStreamReader`` with the rows events only, touching ``ev.rows``;
- ``ours``: the worker's stream and decode path into batches, cut at each XID (no Redis);
- ``worker``: the real worker (in this process, a thread), Redis and all, from a saved
  position at the range's start until the position it saved reaches the range's end.
"""

from __future__ import annotations

import cProfile
import io
import json
import pstats
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import XidEvent
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from bench.binlog_workload import Range, Stack
from cachetail.keyspace import Keyspace


class NoCDecoder(RuntimeError):
    """Neither ``mariadb-binlog`` nor ``mysqlbinlog`` is installed."""


def c_decoder() -> str:
    for name in ("mariadb-binlog", "mysqlbinlog"):
        path = shutil.which(name)
        if path:
            return path
    raise NoCDecoder("no mariadb-binlog or mysqlbinlog: install the mariadb-client package")


def read_c(stack: Stack, rng: Range) -> None:
    """The C decoder over the range, every row printed as pseudo-SQL to /dev/null."""
    cmd = [c_decoder(), "-v", "--read-from-remote-server", "--host=127.0.0.1", f"--port={stack.db.port}",
           "--user=root", f"--start-position={rng.begin[1]}", f"--stop-position={rng.end[1]}",
           rng.begin[0]]
    subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)


def read_bare(stack: Stack, rng: Range) -> int:
    stream = BinLogStreamReader(stack.conn_settings(), server_id=901, blocking=False, resume_stream=True,
                                log_file=rng.begin[0], log_pos=rng.begin[1],
                                only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent, XidEvent],
                                enable_logging=False)
    rows = 0
    try:
        for ev in stream:
            if not isinstance(ev, XidEvent):
                rows += len(ev.rows)
            if (stream.log_file, stream.log_pos) >= rng.end:
                break
    finally:
        stream.close()
    return rows


def ours(stack: Stack, rng: Range, mode: str) -> Callable[[], int]:
    """The worker's stream options and decode path, batches cut at each XID (the catalog is
    resolved before: the returned reader is what is timed); the reader returns the keys made."""
    from invalidator import decode
    from invalidator.apply import Batch
    from invalidator.catalog import Followed, load_catalog
    from invalidator.packets import RowsPacket
    from invalidator.position import Position
    from invalidator.settings import InvalidatorSettings
    from invalidator.stream import control_connection, open_stream
    from pymysqlreplication.row_event import RowsEvent

    settings = InvalidatorSettings.from_env(stack.env("thr", INVALIDATOR_SERVER_ID="902",
                                                      INVALIDATOR_MODE=mode))
    conn = control_connection(settings)
    try:
        followed = Followed(load_catalog(conn, str(settings.config_path), "cachelab"), settings.keyspace)
    finally:
        conn.close()
    refresh = mode == "refresh"

    def no_weights(sql: str, args: tuple[str, ...]) -> tuple[str, ...]:
        raise AssertionError("no collation weights in this workload")

    def claim(table_map: Any) -> bool:
        rules = followed.rules.get(table_map.table)
        return rules is not None and decode.claims(table_map, rules.needed, refresh)

    def read() -> int:
        stream = open_stream(settings, Position(*rng.begin), tables=followed.catalog.tables, claim=claim)
        batch = Batch(refresh)
        keys = 0
        try:
            for ev in stream:
                if type(ev) is RowsPacket:
                    decode.add_packet(batch, ev, followed.rules, no_weights)
                elif isinstance(ev, RowsEvent):
                    decode.add_rows(batch, ev, followed.rules, no_weights)
                elif isinstance(ev, XidEvent):
                    keys += len(batch.ops)
                    batch = Batch(refresh)
                if (stream.log_file, stream.log_pos) >= rng.end:
                    break
        finally:
            stream.close()
        return keys

    return read


def run_worker(stack: Stack, rng: Range, mode: str, prefix: str,
               profile: cProfile.Profile | None = None) -> float:
    """The real worker from a saved position at the range's start; seconds from its first
    event until its position (acknowledged by Redis where there was work) reached the end."""
    from invalidator.settings import InvalidatorSettings
    from invalidator.worker import Worker

    ks = Keyspace(prefix=prefix)
    r = redis.Redis(host="127.0.0.1", port=stack.redis.port)
    r.set(ks.invalidator_position(), json.dumps({"log_file": rng.begin[0], "log_pos": rng.begin[1],
                                                 "source_id": stack.server_id()}))
    settings = InvalidatorSettings.from_env(stack.env(prefix, INVALIDATOR_MODE=mode,
                                                      INVALIDATOR_SERVER_ID="903"))
    stop = threading.Event()
    worker = Worker(settings, stop, serve_http=False)
    def run() -> None:
        if profile is None:
            worker.run()
            return
        profile.enable()
        try:
            worker.run()
        finally:
            profile.disable()

    thread = threading.Thread(target=run, name="bench-worker")
    thread.start()
    try:
        while not worker.streaming:
            if not thread.is_alive():
                raise RuntimeError("the worker stopped before streaming")
            time.sleep(0.002)
        started = time.perf_counter()
        while True:
            # in memory: a position moved only by unmapped rows is saved lazily (once a second)
            pos = worker.position
            if pos is not None and (pos.log_file, pos.log_pos) >= rng.end:
                return time.perf_counter() - started
            if not thread.is_alive():
                raise RuntimeError("the worker stopped")
            time.sleep(0.005)
    finally:
        stop.set()
        thread.join(30)
        r.close()


def timed(fn: Callable[[], Any], profile: cProfile.Profile | None = None) -> tuple[Any, float]:
    started = time.perf_counter()
    if profile is not None:
        profile.enable()
    try:
        result = fn()
    finally:
        if profile is not None:
            profile.disable()
    return result, time.perf_counter() - started


def profile_text(profile: cProfile.Profile, top: int = 14) -> str:
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(top)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
    return "\n".join(lines[start - 1:start + 1 + top] if start else lines)
