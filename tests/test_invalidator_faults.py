"""Crashes and outages: the worker loses no change and never runs ahead of Redis."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import pymysql
import pytest
import redis
from support.invalidator import get_all, master_position, put_all
from support.lab import products_page, user_bytes
from support.stack import Stack
from support.waiting import wait_for


STALE = b'{"stale":1}'


def env_for(stack: Stack, mariadb=None, cache=None) -> dict[str, str]:
    env = stack.invalidator_env()
    if mariadb is not None:
        env.update(DB_HOST=mariadb.host, DB_PORT=str(mariadb.port))
    if cache is not None:
        env.update(REDIS_HOST=cache.host, REDIS_PORT=str(cache.port))
    return env


def saved_position(r: redis.Redis, ks) -> tuple[str, int] | None:
    raw = r.get(ks.invalidator_position())
    if raw is None:
        return None
    data = json.loads(raw)
    return data["log_file"], data["log_pos"]


@pytest.mark.redis_kinds("single", "cluster")
def test_sigkill_mid_stream_and_writes_while_down_lose_nothing(
        stack: Stack, db, redis_client, workers) -> None:
    w = workers(stack.invalidator_env())
    ks = w.keyspace
    ids = list(range(3001, 3601))
    untouched = list(range(3601, 3651))
    put_all(redis_client, {ks.user(i): STALE for i in ids + untouched})
    stop_writing = threading.Event()
    written: list[int] = []

    def writer() -> None:
        conn = stack.mariadb.connect(database="cachelab")
        with conn.cursor() as cur:
            for n, i in enumerate(ids):
                if n % 10 == 0:  # some multi-row transactions among single-row ones
                    conn.begin()
                    cur.execute("UPDATE users SET full_name = CONCAT(full_name, '.') WHERE id = %s", (i,))
                    conn.commit()
                else:
                    cur.execute("UPDATE users SET full_name = CONCAT(full_name, '.') WHERE id = %s", (i,))
                written.append(i)
                time.sleep(0.002)
        conn.close()
        stop_writing.set()

    thread = threading.Thread(target=writer)
    thread.start()
    wait_for(lambda: len(written) > 150, what="writes under way")
    w.kill()  # SIGKILL mid-stream
    killed_at = len(written)
    wait_for(lambda: len(written) > killed_at + 150, what="writes while the worker is down")
    w.start()  # resumes from its saved position
    thread.join(30)
    assert stop_writing.is_set()
    wait_for(lambda: redis_client.exists(*[ks.user(i) for i in ids]) == 0, 20,
             what="every changed key deleted")
    assert get_all(redis_client, [ks.user(i) for i in untouched]) == [STALE] * len(untouched)
    assert w.metric('cachetail_invalidator_full_invalidations_total{reason="no_position"}') == 0
    assert "resuming from" in w.log()


def test_redis_outage_holds_the_position_and_applies_everything_after(
        stack: Stack, db, redis_factory, workers) -> None:
    cache = redis_factory()
    w = workers(env_for(stack, cache=cache))
    ks = w.keyspace
    r = redis.Redis(host=cache.host, port=cache.port)
    ids = list(range(4001, 4021))
    r.mset({ks.user(i): STALE for i in ids})
    held = saved_position(r, ks)

    # Redis frozen (SIGSTOP): data kept, every call times out.
    cache.proc.send_signal(signal.SIGSTOP)
    try:
        with db.cursor() as cur:
            for i in ids:
                cur.execute("UPDATE users SET full_name = CONCAT(full_name, '~') WHERE id = %s", (i,))
        wait_for(lambda: w.metric('cachetail_invalidator_reconnects_total{target="redis"}') >= 1, 10)
        position_gauge = w.metric("cachetail_invalidator_binlog_position")
        time.sleep(1.5)  # the subject: nothing moves while Redis is frozen, so no state to wait on
        assert w.metric("cachetail_invalidator_binlog_position") == position_gauge
        assert w.proc.poll() is None
        check = subprocess.run([sys.executable, "-m", "invalidator", "--check", "--env-file", "/nonexistent"],
                               env={"INVALIDATOR_METRICS_PORT": str(w.port)}, capture_output=True, text=True)
        assert check.returncode == 1 and '"redis_ok": false' in check.stdout
    finally:
        cache.proc.send_signal(signal.SIGCONT)
    wait_for(lambda: r.exists(*[ks.user(i) for i in ids]) == 0, 15, what="keys applied after the outage")
    assert saved_position(r, ks) == master_position(db)
    assert saved_position(r, ks) != held

    # Redis stopped and started again (empty): the worker never exits and catches up.
    cache.stop()
    with db.cursor() as cur:
        cur.execute("UPDATE users SET full_name = CONCAT(full_name, '~') WHERE id = 4001")
    time.sleep(1.0)  # the subject: a while with Redis gone, and the worker has not exited
    assert w.proc.poll() is None
    cache.start()
    r = redis.Redis(host=cache.host, port=cache.port)
    wait_for(lambda: saved_position(r, ks) == master_position(db), 15, what="position saved after restart")
    wait_for(lambda: w.metric("cachetail_invalidator_streaming") == 1)


@pytest.mark.redis_kinds("single", "cluster")
def test_mariadb_restart_reconnects_from_the_saved_position(stack: Stack, mariadb_factory, redis_client,
                                                            workers) -> None:
    server = mariadb_factory()
    w = workers(env_for(stack, mariadb=server))
    ks = w.keyspace
    conn = server.connect(database="cachelab")
    redis_client.set(ks.user(5), STALE)
    with conn.cursor() as cur:
        cur.execute("UPDATE users SET full_name = 'before restart' WHERE id = 5")
    wait_for(lambda: not redis_client.exists(ks.user(5)))
    conn.close()
    server.stop()
    wait_for(lambda: w.metric("cachetail_invalidator_streaming") == 0, 10, what="stream lost")
    server.start()
    redis_client.set(ks.user(6), STALE)
    conn = server.connect(database="cachelab")
    with conn.cursor() as cur:
        cur.execute("UPDATE users SET full_name = 'after restart' WHERE id = 6")
    wait_for(lambda: not redis_client.exists(ks.user(6)), 20, what="change after the restart applied")
    conn.close()
    assert w.metric('cachetail_invalidator_reconnects_total{target="mysql"}') >= 1
    full = {k: v for k, v in w.metrics().items() if k.startswith("cachetail_invalidator_full_invalidations_total")}
    assert full == {'cachetail_invalidator_full_invalidations_total{reason="no_position"}': 1.0}  # first start only
    assert w.stop() == 0


def purge_all_but_a_new_binlog(conn: pymysql.connections.Connection) -> None:
    """FLUSH, then PURGE until only the new file is left: MariaDB keeps a file its binlog
    checkpoint still needs, so one PURGE right after a FLUSH may leave it."""
    with conn.cursor() as cur:
        cur.execute("FLUSH BINARY LOGS")
        current, _ = master_position(conn)

        def purged() -> bool:
            cur.execute("PURGE BINARY LOGS TO %s", (current,))
            cur.execute("SHOW BINARY LOGS")
            return [row[0] for row in cur.fetchall()] == [current]

        wait_for(purged, what=f"every binlog before {current} purged")


@pytest.mark.redis_kinds("single", "cluster")
def test_purged_binlog_means_full_invalidation_of_owned_keys_only(stack: Stack, mariadb_factory, redis_client,
                                                                   workers) -> None:
    server = mariadb_factory()
    w = workers(env_for(stack, mariadb=server))
    ks = w.keyspace
    # The first start had no position: a full invalidation, reason no_position.
    assert w.metric('cachetail_invalidator_full_invalidations_total{reason="no_position"}') == 1
    assert w.stop() == 0
    conn = server.connect(database="cachelab")
    with conn.cursor() as cur:
        cur.execute("FLUSH BINARY LOGS")
        cur.execute("UPDATE users SET full_name = 'lost to purge' WHERE id = 7")
        purge_all_but_a_new_binlog(conn)
    put_all(redis_client, {ks.user(1): STALE, ks.user(7): STALE, products_page(ks, conn): b"x",
                           "foreign:key": b"keep"})
    w.start()
    # the saved file is gone: the worker asks for its GTID state, which is gone too
    assert w.metric('cachetail_invalidator_stream_errors_total{kind="file_missing"}') == 1
    assert w.metric('cachetail_invalidator_stream_errors_total{kind="gtid_purged"}') == 1
    assert w.metric('cachetail_invalidator_full_invalidations_total{reason="purged"}') == 1
    assert not redis_client.exists(ks.user(1), ks.user(7), products_page(ks, conn))
    assert redis_client.get("foreign:key") == b"keep"
    assert "FULL INVALIDATION (purged)" in w.log()
    with conn.cursor() as cur:  # and it follows from there
        redis_client.set(ks.user(8), STALE)
        cur.execute("UPDATE users SET full_name = 'after purge' WHERE id = 8")
    wait_for(lambda: not redis_client.exists(ks.user(8)))
    conn.close()


@pytest.mark.redis_kinds("single", "cluster")
def test_ddl_on_users_clears_user_keys_and_refresh_survives_alter(stack: Stack, mariadb_factory, redis_client,
                                                                  workers) -> None:
    server = mariadb_factory()
    w = workers(env_for(stack, mariadb=server), INVALIDATOR_MODE="refresh")
    ks = w.keyspace
    put_all(redis_client, {ks.user(1): STALE, ks.user(2): STALE})
    conn = server.connect(database="cachelab", init_command="SET time_zone = '+00:00'",
                          cursorclass=pymysql.cursors.DictCursor)
    with conn.cursor() as cur:
        cur.execute("ALTER TABLE users ADD COLUMN nickname VARCHAR(20) NULL AFTER username")
        wait_for(lambda: redis_client.exists(ks.user(1), ks.user(2)) == 0, what="user keys cleared by DDL")
        cur.execute("UPDATE users SET nickname = 'nick', full_name = 'Altered' WHERE id = 3")
        cur.execute("SELECT id, username, email, full_name, created_at, updated_at FROM users WHERE id = 3")
        expected = user_bytes(conn, cur.fetchone())
    wait_for(lambda: redis_client.get(ks.user(3)) == expected, what="refreshed with the new table map")
    conn.close()


def test_sigterm_while_redis_is_down_exits_0_without_advancing(
        stack: Stack, db, redis_factory, workers) -> None:
    cache = redis_factory()
    w = workers(env_for(stack, cache=cache))
    r = redis.Redis(host=cache.host, port=cache.port)
    held = saved_position(r, w.keyspace)
    r.set(w.keyspace.user(31), STALE)
    cache.proc.send_signal(signal.SIGSTOP)
    try:
        with db.cursor() as cur:
            cur.execute("UPDATE users SET full_name = CONCAT(full_name, '^') WHERE id = 31")
        wait_for(lambda: w.metric('cachetail_invalidator_reconnects_total{target="redis"}') >= 1, 10)
        assert w.stop() == 0
    finally:
        cache.proc.send_signal(signal.SIGCONT)
    # A script call that timed out on the client may still run once Redis wakes up: then it ran
    # whole (deletes and position together).  Never the position without the deletes.
    # One MGET: both read at the same instant, even while Redis drains the worker's buffered pipeline.
    raw, value = r.mget([w.keyspace.invalidator_position(), w.keyspace.user(31)])
    data = json.loads(raw)
    after, stale = (data["log_file"], data["log_pos"]), value == STALE
    assert (after == held and stale) or (after == master_position(db) and not stale), (held, after, stale)


def test_the_library_never_reconnects_by_itself(stack: Stack, db) -> None:
    """1.0.17 silently reconnects from its last event on error 2013; our guard turns that into StreamLost."""
    from invalidator.position import Position
    from invalidator.settings import InvalidatorSettings
    from invalidator.stream import StreamLost, open_stream

    settings = InvalidatorSettings.from_env({**stack.invalidator_env(), "INVALIDATOR_HEARTBEAT_S": "0.5"})
    file, pos = master_position(db)
    stream = open_stream(settings, Position(file, pos), tables=("users", "products"))
    try:
        events = iter(stream)
        next(events)  # the rotate event, then heartbeats: connected
        with db.cursor() as cur:
            cur.execute("SELECT id FROM information_schema.processlist WHERE command LIKE 'Binlog Dump%%'"
                        " AND user = 'cachetail_invalidator'")
            for (thread_id,) in cur.fetchall():
                cur.execute(f"KILL {int(thread_id)}")
        with pytest.raises(StreamLost):
            for _ in range(20):
                next(events)
    finally:
        stream.close()


@pytest.mark.redis_kinds("single", "cluster")
def test_a_position_of_another_server_is_not_used(
        stack: Stack, redis_client, workers) -> None:
    w = workers(stack.invalidator_env(), start=False)
    ks = w.keyspace
    redis_client.set(ks.invalidator_position(),
                     json.dumps({"log_file": "binlog.000001", "log_pos": 4, "source_id": 987654}))
    redis_client.set(ks.user(1), STALE)
    w.start()
    assert w.metric('cachetail_invalidator_full_invalidations_total{reason="source_changed"}') == 1
    assert not redis_client.exists(ks.user(1))
    assert "no GTID state is known for binlog.000001:4 (server_id 987654)" in w.log()
