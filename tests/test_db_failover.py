"""The database fails over: the invalidator finds its place on the new primary by GTID.

Two real MariaDB servers, a primary and its GTID replica with ``log_slave_updates``,
behind one address (a proxy whose backend switches and cuts every open connection):
what RDS, Aurora or an orchestrator does to the endpoint.
"""

from __future__ import annotations

import asyncio
import json
import signal

import anyio
import pytest
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import UpdateRowsEvent

from cachetail.devstack import MariaDB
from support.api import assert_json_error, running
from support.invalidator import WorkerProcess, get_all, put_all
from support.stack import INVALIDATOR_PASSWORD, DatabasePair, Stack
from support.waiting import wait_for

STALE = b'{"stale":1}'
FROM_OLD_PRIMARY = b'{"from":"the old primary"}'
UNTOUCHED = list(range(900, 910))
PAD_TABLE = "cachelab.binlog_padding"


def update(server: MariaDB, ids: list[int], mark: str) -> None:
    conn = server.connect(database="cachelab")
    with conn.cursor() as cur:
        for i in ids:
            cur.execute("UPDATE users SET full_name = CONCAT(full_name, %s) WHERE id = %s", (mark, i))
    conn.close()


def full_invalidations(w: WorkerProcess) -> dict[str, float]:
    return {k: v for k, v in w.metrics().items()
            if k.startswith("cachetail_invalidator_full_invalidations_total") and v}


def saved(redis_client, w: WorkerProcess) -> dict[str, object]:
    raw = redis_client.get(w.keyspace.invalidator_position())
    assert raw is not None
    return dict(json.loads(raw))


def wait_saved_gtid(redis_client, w: WorkerProcess, server: MariaDB) -> dict[str, object]:
    """Until the worker saved the server's current GTID state with its position."""
    target = server.gtid_pos()
    return wait_for(lambda: (p := saved(redis_client, w)).get("gtid") == target and p,
                    15, f"the worker's saved GTID at {target}")


def start_worker(stack: Stack, pair: DatabasePair, workers, **overrides: str) -> WorkerProcess:
    w: WorkerProcess = workers(pair.env(stack.invalidator_env()), **overrides)
    return w


def end_of_binlog(server: MariaDB) -> tuple[str, int]:
    row = server.query("SHOW MASTER STATUS")[0]
    return str(row[0]), int(row[1])


def pad_binlog_to(server: MariaDB, log_file: str, log_pos: int) -> None:
    """Write transactions until ``server``'s binlog ``log_file`` has an event boundary at exactly
    ``log_pos``: one INSERT's size grows by one byte per byte of its string."""
    server.query(f"CREATE TABLE IF NOT EXISTS {PAD_TABLE} (id INT AUTO_INCREMENT PRIMARY KEY,"
                 " s VARCHAR(6000) NOT NULL)")

    def insert(length: int) -> int:
        before = end_of_binlog(server)
        server.query(f"INSERT INTO {PAD_TABLE} (s) VALUES (REPEAT('x', %s))", (length,))
        after = end_of_binlog(server)
        assert after[0] == before[0] == log_file, (before, after)
        return after[1] - before[1]

    overhead = insert(1000) - 1000  # for a four-digit length
    while True:
        gap = log_pos - end_of_binlog(server)[1]
        assert gap >= overhead + 1000, f"cannot pad {gap} bytes (overhead {overhead})"
        if gap <= overhead + 5000:
            insert(gap - overhead)
            break
        insert(4000)
    assert end_of_binlog(server) == (log_file, log_pos)


def rows_changed_from(server: MariaDB, log_file: str, log_pos: int) -> set[int]:
    """User ids a reader following ``server`` from this file and offset would see change."""
    stream = BinLogStreamReader(
        connection_settings={"host": server.host, "port": server.port, "user": "cachetail_invalidator",
                             "password": INVALIDATOR_PASSWORD},
        server_id=4_000_000_000, blocking=False, resume_stream=True, log_file=log_file, log_pos=log_pos,
        only_events=[UpdateRowsEvent], only_tables=["users"])
    try:
        return {row["after_values"]["id"] for event in stream for row in event.rows}
    finally:
        stream.close()


def test_failover_while_following_resumes_by_gtid_without_a_full_invalidation(
        stack: Stack, redis_client, workers, database_pair) -> None:
    pair = database_pair()
    w = start_worker(stack, pair, workers)
    ks = w.keyspace
    put_all(redis_client, {ks.user(i): STALE for i in UNTOUCHED + [1, 2]})
    update(pair.primary, [1, 2], "a")
    wait_for(lambda: not redis_client.exists(ks.user(1), ks.user(2)), what="changes on the primary applied")
    old_id = pair.primary.server_id

    pair.failover()
    changed = list(range(11, 21))
    put_all(redis_client, {ks.user(i): STALE for i in changed})
    update(pair.primary, changed, "b")  # on the promoted replica
    wait_for(lambda: redis_client.exists(*[ks.user(i) for i in changed]) == 0, 20,
             what="every change made on the new primary applied")

    assert get_all(redis_client, [ks.user(i) for i in UNTOUCHED]) == [STALE] * len(UNTOUCHED)
    assert full_invalidations(w) == {'cachetail_invalidator_full_invalidations_total{reason="no_position"}': 1.0}
    assert w.metric('cachetail_invalidator_resumes_total{how="gtid"}') >= 1
    assert w.metric("cachetail_invalidator_source_changes_total") == 1
    assert w.metric("cachetail_invalidator_source_server_id") == pair.primary.server_id != old_id
    position = wait_saved_gtid(redis_client, w, pair.primary)
    assert position["source_id"] == pair.primary.server_id  # B's own file and offset from now on


@pytest.mark.parametrize("how", ["paused", "stopped"])
def test_an_offset_of_the_old_primary_is_never_used_on_the_new_one(
        stack: Stack, redis_client, workers, database_pair, how: str) -> None:
    """Both servers name their binlogs binlog.00000N.  The trap: the new primary's file of the
    same name has an event boundary at the old primary's saved offset, after the changes made
    on it - resuming there would silently skip them."""
    pair = database_pair()
    w = start_worker(stack, pair, workers, INVALIDATOR_LEASE_S="60")  # a pause is not a takeover
    ks = w.keyspace
    pair.primary.query("FLUSH BINARY LOGS")  # the old primary writes binlog.000002 ...
    update(pair.primary, list(range(100, 140)), "a")
    position = wait_saved_gtid(redis_client, w, pair.primary)
    old_file, old_offset = str(position["log_file"]), int(position["log_pos"])
    assert old_file == "binlog.000002"
    if how == "paused":
        w.signal(signal.SIGSTOP)  # its connection is cut while it cannot notice
    else:
        assert w.stop() == 0

    pair.failover()
    new = pair.primary
    new.query("FLUSH BINARY LOGS")  # ... and so does the new one, from here
    assert end_of_binlog(new)[0] == old_file
    changed = list(range(21, 31))
    put_all(redis_client, {ks.user(i): STALE for i in changed + UNTOUCHED})
    update(new, changed, "b")
    pad_binlog_to(new, old_file, old_offset)
    assert rows_changed_from(new, old_file, old_offset) == set()  # the trap is armed

    if how == "paused":
        w.signal(signal.SIGCONT)
    else:
        w.start()
    wait_for(lambda: redis_client.exists(*[ks.user(i) for i in changed]) == 0, 20,
             what="the changes before the old offset applied")
    assert get_all(redis_client, [ks.user(i) for i in UNTOUCHED]) == [STALE] * len(UNTOUCHED)
    assert set(full_invalidations(w)) <= {'cachetail_invalidator_full_invalidations_total{reason="no_position"}'}
    assert "from GTID state" in w.log()


@pytest.mark.parametrize("how", ["following", "stopped"])
def test_a_new_primary_without_our_last_transactions_means_a_full_invalidation(
        stack: Stack, redis_client, workers, database_pair, how: str) -> None:
    """The replica stopped before the primary's last transactions; the worker applied them and
    the API cached rows the new primary never had.  Following: the worker reconnects at once and
    sees the server lacks them.  Stopped: the new primary writes past their sequence numbers
    first, and the server itself refuses our GTID state (strict mode)."""
    pair = database_pair()
    w = start_worker(stack, pair, workers)
    ks = w.keyspace
    pair.replica.stop_replication()
    lost = list(range(41, 46))
    update(pair.primary, lost, "lost")
    wait_saved_gtid(redis_client, w, pair.primary)
    put_all(redis_client, {ks.user(i): FROM_OLD_PRIMARY for i in lost})  # filled from the old primary
    if how == "stopped":
        assert w.stop() == 0

    pair.failover(caught_up=False)
    if how == "stopped":
        update(pair.primary, list(range(50, 60)), "b")  # past the lost sequence numbers
        w.start(wait_streaming=False)
    wait_for(lambda: w.metric('cachetail_invalidator_full_invalidations_total{reason="diverged"}') == 1,
             20, what="a full invalidation for the diverged server")
    assert redis_client.exists(*[ks.user(i) for i in lost]) == 0
    kind = "diverged" if how == "stopped" else None
    if kind:
        assert w.metric('cachetail_invalidator_stream_errors_total{kind="diverged"}') == 1
    # and it follows the new primary from there
    wait_for(lambda: w.metric("cachetail_invalidator_streaming") == 1)
    redis_client.set(ks.user(61), STALE)
    update(pair.primary, [61], "c")
    wait_for(lambda: not redis_client.exists(ks.user(61)), what="a change after the full invalidation")
    assert "FULL INVALIDATION (diverged)" in w.log()


# ------------------------------------------------------------------ the API

@pytest.mark.anyio
async def test_the_api_answers_from_the_new_primary_without_a_restart(
        stack: Stack, redis_client, database_pair, anyio_backend) -> None:
    """Hits are served while the address leads nowhere, misses answer 503 JSON, and the
    first read after the address moved answers from the new primary: the pool drops the cut
    connections and reconnects."""
    pair = database_pair()
    async with running(pair.env(stack.api_env())) as (_, client):
        # several pooled connections to the old primary, all cut by the move
        warm = await asyncio.gather(*(client.get(f"/user/{i}/nocache") for i in range(1, 9)))
        assert {r.status_code for r in warm} == {200}
        assert (await client.get("/user/8")).status_code == 200  # cached now

        await anyio.to_thread.run_sync(pair.replica.wait_replicated, pair.primary.gtid_pos())
        pair.proxy.refuse()  # the address leads nowhere for a moment
        hit = await client.get("/user/8")
        assert (hit.status_code, hit.headers["x-cache"]) == (200, "HIT")
        down = await client.get("/user/5/nocache")
        assert assert_json_error(down, 503)["error"] == "database_unavailable"

        await anyio.to_thread.run_sync(pair.failover, False)  # replica already in sync
        await anyio.to_thread.run_sync(
            pair.primary.query, "UPDATE cachelab.users SET full_name = 'written on B' WHERE id = 5")
        after = [await client.get("/user/5/nocache") for _ in range(8)]  # every pooled connection
    assert [r.status_code for r in after] == [200] * 8
    assert {r.json()["full_name"] for r in after} == {"written on B"}



@pytest.mark.anyio
async def test_a_read_is_one_round_trip_to_mysql(stack: Stack, redis_client, anyio_backend) -> None:
    """No PING as a pooled connection is taken, no ROLLBACK as it goes back (autocommit
    connections, single SELECTs): the pool heals a cut connection by retrying its query
    (the test above), so a read costs MySQL one command, and a miss one thread's round trip."""
    def counters() -> dict[str, int]:
        rows = stack.mariadb.query("SHOW GLOBAL STATUS WHERE Variable_name IN"
                                   " ('Com_select', 'Com_rollback', 'Com_admin_commands')")
        return {name: int(value) for name, value in rows}

    async with running(stack.api_env()) as (_, client):
        await asyncio.gather(*(client.get(f"/user/{i}/nocache") for i in range(1, 9)))  # the pool opened
        before = await anyio.to_thread.run_sync(counters)
        answers = [await client.get(f"/user/{i}{suffix}") for i in range(20, 40) for suffix in ("", "/nocache")]
        after = await anyio.to_thread.run_sync(counters)
    assert {r.status_code for r in answers} == {200}
    delta = {name: after[name] - before[name] for name in after}
    assert delta["Com_rollback"] == 0 and delta["Com_admin_commands"] == 0, delta
    assert delta["Com_select"] >= 40, delta
