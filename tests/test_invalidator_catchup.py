"""Catching up: scripts sent from a thread of their own while the next transactions decode.

The worker runs in this process (a thread), so the test can see that the scripts really
went out from the sender while it was behind, and can cut the binlog connection from
inside a send: the position it resumes from must be one Redis acknowledged.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from prometheus_client import REGISTRY

from cachetail.scripts import FENCED_APPLY
from conftest import Stack
from invalidator.apply import Batch, Sent
from invalidator.position import Position
from invalidator.settings import InvalidatorSettings
from invalidator.worker import Worker
from invalidator_support import master_position, unique_prefix, wait_for

ROWS_PER_TX = 50
TXS = 300
STALE = b'{"stale":1}'


class CountingExecutor(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="invalidator-send")
        self.sent = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.sent += 1
        return super().submit(fn, *args, **kwargs)


class CutInsideASend(Worker):
    """Kills its own binlog dump thread from inside its ``cut_at``-th send."""

    cut_at = 2

    def __init__(self, settings: InvalidatorSettings, stop: threading.Event, kill_with: Stack) -> None:
        super().__init__(settings, stop, serve_http=False)
        self.kill_with = kill_with
        self.cut = 0  # dump threads killed
        self.behind = 0  # groups written while the one before was in flight, both acknowledged

    def lead(self) -> None:
        sends = 0

        def seam(batch: Batch) -> None:
            nonlocal sends
            sends += 1
            if sends == self.cut_at:
                self.cut = kill_dump_threads(self.kill_with)
        self.applier.before_send = seam
        send_behind = self.applier.send_behind

        def counted(batch: Batch, position: Position | None, earlier: Sent | None) -> Sent | None:
            sent = send_behind(batch, position, earlier)
            self.behind += earlier is not None and sent is not None  # written behind one in flight
            return sent
        self.applier.send_behind = counted  # type: ignore[method-assign]
        super().lead()


def reconnects() -> float:
    return REGISTRY.get_sample_value("cachetail_invalidator_reconnects_total", {"target": "mysql"}) or 0.0


def kill_dump_threads(stack: Stack) -> int:
    conn = stack.mariadb.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id FROM information_schema.processlist WHERE command LIKE 'Binlog Dump%%'"
                        " AND user = 'cachetail_invalidator'")
            ids = [row[0] for row in cur.fetchall()]
            for thread_id in ids:
                cur.execute(f"KILL {int(thread_id)}")
        return len(ids)
    finally:
        conn.close()


def test_catching_up_sends_from_the_thread_and_a_cut_connection_loses_nothing(
        stack: Stack, db, redis_client) -> None:
    prefix = unique_prefix()
    env = {**stack.invalidator_env(), "CACHE_KEY_PREFIX": prefix, "INVALIDATOR_HEARTBEAT_S": "1",
           "INVALIDATOR_RETRY_MAX_S": "0.3"}
    settings = InvalidatorSettings.from_env(env)
    ks = settings.keyspace
    ids = range(1, ROWS_PER_TX * TXS // 3 + 1)  # each row three times
    redis_client.mset({ks.user(i): STALE for i in ids})
    begin = master_position(db)
    with db.cursor() as cur:
        cur.execute("SELECT @@server_id")
        (server_id,) = cur.fetchone()
        for t in range(TXS):
            first = 1 + (t * ROWS_PER_TX) % len(ids)
            cur.execute("UPDATE users SET full_name = CONCAT(LEFT(full_name, 80), '.')"
                        " WHERE id BETWEEN %s AND %s", (first, first + ROWS_PER_TX - 1))
    end = master_position(db)
    redis_client.set(ks.invalidator_position(), json.dumps(
        {"log_file": begin[0], "log_pos": begin[1], "source_id": server_id}))

    reconnected = reconnects()
    redis_client.script_load(FENCED_APPLY)  # else the first script meets NOSCRIPT and is retried alone
    stop = threading.Event()
    worker = CutInsideASend(settings, stop, stack)
    worker.sender = sender = CountingExecutor()
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        wait_for(lambda: worker.position is not None and (worker.position.log_file, worker.position.log_pos)
                 >= end, 30, "the worker caught up")
        saved = json.loads(redis_client.get(ks.invalidator_position()))
        assert (saved["log_file"], saved["log_pos"]) >= end
        assert redis_client.exists(*[ks.user(i) for i in ids]) == 0
        assert sender.sent >= 2, "the scripts went out from the sender while behind"
        assert worker.behind >= 1, "a script was written behind the one in flight"
        assert worker.cut == 1
        assert reconnects() == reconnected + 1
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()


class PausedInsideASend(Worker):
    """Holds its first send of keys until ``release`` is set; ``held_in`` names its thread."""

    def __init__(self, settings: InvalidatorSettings, stop: threading.Event) -> None:
        super().__init__(settings, stop, serve_http=False)
        self.paused = threading.Event()
        self.release = threading.Event()
        self.held_in = ""

    def lead(self) -> None:
        sends = 0

        def seam(batch: Batch) -> None:
            nonlocal sends
            sends += bool(batch.ops)  # a position saved alone is not held
            if sends == 1 and batch.ops:
                self.held_in = threading.current_thread().name
                self.paused.set()
                self.release.wait(30)
        self.applier.before_send = seam
        super().lead()


def test_a_position_is_never_saved_past_a_send_in_flight(stack: Stack, db, redis_client, monkeypatch) -> None:
    """Transactions that touch nothing cached move the position while a send is in flight;
    saving that position from the worker's thread could reach Redis before the send does."""
    monkeypatch.setattr("invalidator.worker.IDLE_SAVE_S", 0.0)  # such positions are saved at once
    prefix = unique_prefix()
    settings = InvalidatorSettings.from_env({**stack.invalidator_env(), "CACHE_KEY_PREFIX": prefix,
                                             "INVALIDATOR_HEARTBEAT_S": "1"})
    ks = settings.keyspace
    ids = range(1, 6001)  # one transaction past Group.MAX_KEYS: sent at its XID, while behind
    redis_client.mset({ks.user(i): STALE for i in ids})
    with db.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS cu_other (id INT PRIMARY KEY, v INT)")
        cur.execute("INSERT IGNORE INTO cu_other VALUES (1, 0)")
        begin = master_position(db)
        cur.execute("SELECT @@server_id")
        (server_id,) = cur.fetchone()
        cur.execute("UPDATE users SET full_name = CONCAT(LEFT(full_name, 80), '.') WHERE id <= 6000")
        for v in range(5):  # then transactions of a table not cached
            cur.execute("UPDATE cu_other SET v = %s WHERE id = 1", (v + 1,))
        cur.execute("SELECT @@gtid_binlog_pos")
        (last,) = cur.fetchone()
        end = master_position(db)
    redis_client.set(ks.invalidator_position(), json.dumps(
        {"log_file": begin[0], "log_pos": begin[1], "source_id": server_id}))
    stop = threading.Event()
    worker = PausedInsideASend(settings, stop)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        assert worker.paused.wait(30), "no send"
        assert worker.held_in.startswith("invalidator-send")
        wait_for(lambda: worker.gtids is not None and worker.gtids.state == last, 30,
                 "the worker read past them while the send is held")
        saved = json.loads(redis_client.get(ks.invalidator_position()))
        assert (saved["log_file"], saved["log_pos"]) == begin
        worker.release.set()
        wait_for(lambda: worker.position is not None and (worker.position.log_file, worker.position.log_pos)
                 >= end, 30, "the worker caught up")
        assert redis_client.exists(*[ks.user(i) for i in ids]) == 0
    finally:
        worker.release.set()
        stop.set()
        thread.join(30)
        with db.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS cu_other")
