"""The worker against the shared MariaDB + Redis: every change reaches exactly its keys."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pymysql
import pytest
import redis

from cachetail.keyspace import LEASE, NEGATIVE
from cachetail.settings import MySQLSettings
from support.invalidator import master_position
from support.lab import catalog, products_generation
from support.stack import Stack
from support.waiting import wait_for

def cold_read_bytes(stack: Stack, user_id: int) -> bytes:
    """What the API stores on a cold read: its SELECT, its connection settings, its codec."""
    kwargs = MySQLSettings.from_env(stack.invalidator_env()).pymysql_kwargs()
    conn = pymysql.connect(**kwargs, cursorclass=pymysql.cursors.DictCursor)
    try:
        user = catalog(conn).entities[0]
        with conn.cursor() as cur:
            cur.execute(user.select_sql, (user_id,))
            return user.rows.from_select(cur.fetchone())
    finally:
        conn.close()


def gone(r: redis.Redis, key: str) -> bool:
    return not r.exists(key)


@pytest.mark.redis_kinds("single", "cluster")
def test_update_delete_insert_and_products(stack: Stack, db, redis_client, workers) -> None:
    w = workers(stack.invalidator_env())
    ks = w.keyspace
    with db.cursor() as cur:
        # UPDATE -> the user's key goes.
        redis_client.set(ks.user(11), b'{"stale":1}')
        cur.execute("UPDATE users SET full_name = CONCAT(full_name, '!') WHERE id = 11")
        wait_for(lambda: gone(redis_client, ks.user(11)), what="user 11 deleted after UPDATE")

        # DELETE -> gone; INSERT after a cached 404 -> the negative entry goes.
        cur.execute("INSERT INTO users (username, email, full_name) VALUES ('inv_del', 'd@x', 'D')")
        new_id = cur.lastrowid
        wait_for(lambda: gone(redis_client, ks.user(new_id)))
        redis_client.set(ks.user(new_id), b'{"id":1}')
        cur.execute("DELETE FROM users WHERE id = %s", (new_id,))
        wait_for(lambda: gone(redis_client, ks.user(new_id)), what="deleted user's key gone")
        redis_client.set(ks.user(new_id), NEGATIVE, ex=30)
        cur.execute("INSERT INTO users (id, username, email, full_name) VALUES (%s, 'inv_del', 'd@x', 'D')",
                    (new_id,))
        wait_for(lambda: gone(redis_client, ks.user(new_id)), what="negative entry gone after INSERT")
        cur.execute("DELETE FROM users WHERE id = %s", (new_id,))

        # A products row -> the generations of the variants it is in move, and only those:
        # the unfiltered list and its category's; before and after images on a move.
        cur.execute("SELECT category FROM products WHERE id = 3")
        (mine,) = cur.fetchone()
        other = "toys" if mine != "toys" else "books"
        gens = {c: products_generation(ks, db, c) for c in (None, mine, other)}

        def generations() -> dict[str | None, int]:
            return {c: int(redis_client.get(k) or 0) for c, k in gens.items()}

        before = generations()
        cur.execute("UPDATE products SET stock = stock + 1 WHERE id = 3")
        wait_for(lambda: (g := generations())[None] > before[None] and g[mine] > before[mine],
                 what="the generations of its variants bumped")
        assert generations()[other] == before[other]
        before = generations()
        cur.execute("UPDATE products SET category = %s WHERE id = 3", (other,))
        wait_for(lambda: all(v > before[c] for c, v in generations().items()),
                 what="both categories' generations bumped by a move")
        cur.execute("UPDATE products SET category = %s WHERE id = 3", (mine,))

        # A table cachetail does not cache: nothing happens, the position still moves.
        cur.execute("CREATE TABLE IF NOT EXISTS inv_other (id INT PRIMARY KEY, v INT)")
        cur.execute("REPLACE INTO inv_other VALUES (1, 1)")
    redis_client.set("unrelated", b"1")
    file, pos = master_position(db)
    wait_for(lambda: redis_client.get(ks.invalidator_position()) and
             f'"log_pos":{pos}'.encode() in redis_client.get(ks.invalidator_position()),
             what="position saved past unrelated transactions")
    assert redis_client.get("unrelated") == b"1"
    m = w.metrics()
    assert m['cachetail_invalidator_row_events_total{operation="update",table="users"}'] >= 1
    assert m['cachetail_invalidator_row_events_total{operation="delete",table="users"}'] >= 2
    assert m['cachetail_invalidator_keys_total{action="generation_bumped"}'] >= 1
    assert w.stop() == 0


def test_a_200_row_transaction_is_one_script_call(stack: Stack, db, redis_client, workers) -> None:
    # a long lease: no renewal (also a script call) falls inside the measured window
    w = workers(stack.invalidator_env(), INVALIDATOR_LEASE_S="300")
    ks = w.keyspace
    ids = range(2001, 2201)
    redis_client.mset({ks.user(i): b'{"stale":1}' for i in ids})
    tx_before = w.metric("cachetail_invalidator_transactions_total")
    calls_before = int(redis_client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))
    db.begin()
    with db.cursor() as cur:
        for i in ids:
            cur.execute("UPDATE users SET full_name = CONCAT('T', full_name) WHERE id = %s", (i,))
    db.commit()
    wait_for(lambda: redis_client.exists(*[ks.user(i) for i in ids]) == 0, what="all 200 keys gone")
    wait_for(lambda: w.metric("cachetail_invalidator_transactions_total") == tx_before + 1)
    assert w.metric('cachetail_invalidator_keys_total{action="deleted"}') >= 200
    calls = int(redis_client.info("commandstats")["cmdstat_evalsha"]["calls"])
    assert calls - calls_before == 1, "the 200 deletes and the position went in one fenced script"


@pytest.mark.redis_kinds("single", "cluster")
def test_refresh_stores_the_bytes_a_cold_read_stores(stack: Stack, db, redis_client, workers) -> None:
    w = workers(stack.invalidator_env(), INVALIDATOR_MODE="refresh")
    ks = w.keyspace
    redis_client.set(ks.user(21), LEASE + b"some-fill-token", px=5000)  # an in-flight fill
    with db.cursor() as cur:
        # a name new on every run: the session's MariaDB is shared by both Redis kinds
        cur.execute("UPDATE users SET full_name = %s, updated_at = NOW() WHERE id = 21",
                    (f"Zoë Ünïcode 🚀 {w.prefix}",))
        cur.execute("INSERT INTO users (username, email, full_name, created_at) VALUES"
                    " ('inv_refresh', 'r@x', 'R', '2038-01-19 03:14:07')")
        new_id = cur.lastrowid
    for user_id in (21, new_id):
        expected = cold_read_bytes(stack, user_id)
        wait_for(lambda u=user_id, e=expected: redis_client.get(ks.user(u)) == e,
                 what=f"user {user_id} refreshed to {expected!r}")
        ttl = redis_client.ttl(ks.user(user_id))
        assert 3500 < ttl <= 3600
    assert b"2038-01-19T03:14:07Z" in redis_client.get(ks.user(new_id))
    assert w.metric('cachetail_invalidator_keys_total{action="refreshed"}') >= 2
    with db.cursor() as cur:  # a deleted row is deleted even in refresh mode
        cur.execute("DELETE FROM users WHERE id = %s", (new_id,))
    wait_for(lambda: gone(redis_client, ks.user(new_id)), what="deleted in refresh mode")


@pytest.mark.redis_kinds("single", "cluster")
def test_sigterm_exits_0_within_10_s_and_check(stack: Stack, redis_client, workers) -> None:
    w = workers(stack.invalidator_env())
    env = {"PATH": w.env["PATH"], "INVALIDATOR_METRICS_PORT": str(w.port)}
    check = [sys.executable, "-m", "invalidator", "--check", "--env-file", "/nonexistent"]
    assert subprocess.run(check, env=env, capture_output=True).returncode == 0
    time.sleep(1.5)  # quiet database: only heartbeats arrive
    started = time.monotonic()
    w.signal(signal.SIGTERM)
    assert w.proc.wait(10) == 0
    assert time.monotonic() - started < 10
    assert subprocess.run(check, env=env, capture_output=True).returncode == 1
    assert "stopped at" in w.log()


def test_systemd_notify_ready_and_watchdog(stack: Stack, redis_client, workers, tmp_path) -> None:
    import socket

    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(10)
        w = workers(stack.invalidator_env(), NOTIFY_SOCKET=str(path))
        seen: list[str] = []
        while not any(m.startswith("WATCHDOG=1") for m in seen):
            seen.append(sock.recv(4096).decode())
        assert seen[0].startswith("READY=1")
        assert w.stop() == 0
        rest = []
        sock.settimeout(0.5)
        try:
            while True:
                rest.append(sock.recv(4096).decode())
        except TimeoutError:
            pass
        assert "STOPPING=1" in rest


@pytest.mark.redis_kinds("single", "cluster")
def test_a_lost_products_generation_comes_back_above_every_old_one(stack: Stack, db, redis_client,
                                                                   workers) -> None:
    w = workers(stack.invalidator_env())
    gen = products_generation(w.keyspace, db)
    redis_client.set(gen, 7)
    with db.cursor() as cur:
        cur.execute("UPDATE products SET stock = stock + 1 WHERE id = 4")
        wait_for(lambda: redis_client.get(gen) == b"8", what="INCR of an existing generation")
        redis_client.delete(gen)  # evicted or cleared
        cur.execute("UPDATE products SET stock = stock + 1 WHERE id = 4")
    wait_for(lambda: int(redis_client.get(gen) or 0) > 10**15, what="re-created from the server clock")
