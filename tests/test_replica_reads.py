"""Fills from a read replica and reads of one's own write (api/freshness.py), on real servers.

A MariaDB primary and its GTID replica; the invalidator follows the primary, the API reads
the replica (DB_READ_HOST).  Replica lag is forced by stopping its SQL thread (and by
MASTER_DELAY); every interleaving is reached by waiting on a state (the replica's process
list, the worker's waiters, a paused tracking socket), never by sleeping.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from cachetail import gtid
from cachetail.devstack import MariaDB
from cachetail.keyspace import Keyspace, key_slot, watermark
from support.api import Delta, running
from support.invalidator import WorkerProcess
from support.replication import Replicated, applied, metric, tag, update, wait_applied, wait_applied_async
from support.waiting import wait_for_async

pytestmark = pytest.mark.anyio
IDS = list(range(200, 210))


def names(responses: list[Any]) -> list[str]:
    return [json.loads(r.content)["full_name"] for r in responses]


async def change(pair: Replicated, redis_client: Any, w: WorkerProcess, ids: list[int], word: str) -> str:
    """Rename ``ids`` on the primary and wait until the invalidator applied it; the name."""
    await wait_applied_async(redis_client, w, update(pair.primary, ids, name := tag(word)))
    return name


# ------------------------------------------------------------- fills from a replica


@pytest.mark.redis_kinds("single", "cluster")
async def test_a_lagging_replica_never_fills_the_cache_with_an_invalidated_row(
        stack, redis_client, workers, pair, nearcache) -> None:
    """The issue's case: cached users change on the primary while the replica is behind and
    the invalidator deletes them.  The next reads' fills find the replica behind their
    watermark, read the primary after DB_READ_WAIT_MS, and store the new rows: once the
    replica has caught up, no key is stale (before the fix: 17 of 30)."""
    w = workers(pair.invalidator_env(stack))
    async with running(pair.api_env(stack, w.prefix)) as (app, client):
        before = names([await client.get(f"/user/{i}") for i in IDS])
        with pair.behind():
            name = await change(pair, redis_client, w, IDS, "Changed")
            waits = Delta(metric("replica_waits_total", result="timeout"),
                          metric("primary_reads_total", reason="timeout"))
            during = [await client.get(f"/user/{i}") for i in IDS]
            assert waits() == [len(IDS), len(IDS)]
        pair.caught_up()
        after = [await client.get(f"/user/{i}") for i in IDS]
    assert before != names(during)
    assert names(during) == names(after) == [f"{name} {i}" for i in IDS]
    assert [r.headers["x-cache"] for r in during] == ["MISS"] * len(IDS)
    assert [r.headers["x-cache"] for r in after] == ["HIT"] * len(IDS)
    ks = Keyspace(prefix=w.prefix)
    assert [json.loads(redis_client.get(ks.user(i)))["full_name"] for i in IDS] == names(after)


@pytest.mark.redis_kinds("single", "cluster")
async def test_a_fill_waits_for_the_replica_to_apply_its_watermark(stack, redis_client, workers, pair) -> None:
    """The replica applies the change while the fills wait in MASTER_GTID_WAIT: they read it
    there, not from the primary, and store it."""
    w = workers(pair.invalidator_env(stack))
    env = pair.api_env(stack, w.prefix, CACHE_LEASE_MS="10000", DB_READ_WAIT_MS="5000")
    async with running(env) as (app, client):
        for i in IDS:
            await client.get(f"/user/{i}")
        with pair.behind():
            name = await change(pair, redis_client, w, IDS, "Waited")
            waits = Delta(metric("replica_waits_total", result="ok"),
                          metric("primary_reads_total", reason="timeout"))
            reads = asyncio.gather(*(client.get(f"/user/{i}") for i in IDS))
            await wait_for_async(lambda: asyncio.to_thread(lambda: pair.waits_in_progress() == len(IDS)), 15,
                                 "every fill waiting on the replica")
        during = await reads
        assert waits() == [len(IDS), 0]
        assert names(during) == [f"{name} {i}" for i in IDS]
        again = [await client.get(f"/user/{i}") for i in IDS]
    assert [r.headers["x-cache"] for r in again] == ["HIT"] * len(IDS)


async def test_an_invalidation_between_the_select_and_the_store_still_wins(
        stack, redis_client, workers, pair) -> None:
    """The fill read the replica before the change; the change and its invalidation land
    before its store: the compare-and-set fails.  The next fill waits for the change's
    watermark and (the replica stopped) reads the primary."""
    w = workers(pair.invalidator_env(stack))
    changed: list[str] = []
    name = tag("Raced")

    async def between(key: str) -> None:
        if changed:
            return
        pair.stop_applying()
        changed.append(update(pair.primary, [IDS[0]], name))
        await wait_applied_async(redis_client, w, changed[0])

    try:
        async with running(pair.api_env(stack, w.prefix), after_select=between) as (app, client):
            fills = Delta(metric("cache_fills_total", entity="user", result="stale_prevented"))
            first = await client.get(f"/user/{IDS[0]}")
            assert fills() == [1]
            second = await client.get(f"/user/{IDS[0]}")
            third = await client.get(f"/user/{IDS[0]}")
    finally:
        pair.start_applying()
    assert names([first]) != [f"{name} {IDS[0]}"]  # true when it was read
    assert names([second, third]) == [f"{name} {IDS[0]}"] * 2
    assert [r.headers["x-cache"] for r in (second, third)] == ["MISS", "HIT"]


async def test_a_delayed_replica_is_waited_for(stack, redis_client, workers, pair) -> None:
    """MASTER_DELAY = 1: every change reaches the replica a second late; fills wait for it."""
    pair.replica.query("STOP SLAVE")
    pair.replica.query("CHANGE MASTER TO MASTER_DELAY = 1")
    pair.replica.query("START SLAVE")
    w = workers(pair.invalidator_env(stack))
    env = pair.api_env(stack, w.prefix, CACHE_LEASE_MS="10000", DB_READ_WAIT_MS="5000")
    async with running(env) as (app, client):
        await client.get(f"/user/{IDS[1]}")
        last = update(pair.primary, [IDS[1]], name := tag("Delayed"))
        await wait_applied_async(redis_client, w, last)
        waits = Delta(metric("replica_waits_total", result="ok"))
        fresh = await client.get(f"/user/{IDS[1]}")
        assert waits() == [1]
    assert names([fresh]) == [f"{name} {IDS[1]}"]


async def test_lists_fill_from_the_replica_after_their_variant_changed(stack, redis_client, workers, pair) -> None:
    w = workers(pair.invalidator_env(stack))
    async with running(pair.api_env(stack, w.prefix)) as (app, client):
        await client.get("/products", params={"category": "books"})
        with pair.behind():
            conn = pair.primary.connect(database="cachelab")
            with conn.cursor() as cur:
                cur.execute("UPDATE products SET name = 'Renamed on the primary' WHERE category = 'books'"
                            " ORDER BY id LIMIT 1")
                cur.execute("SELECT @@last_gtid")
                last = str(cur.fetchone()[0])
            conn.close()
            await wait_applied_async(redis_client, w, last)
            during = await client.get("/products", params={"category": "books"})
    assert "Renamed on the primary" in during.text and during.headers["x-cache"] == "MISS"


async def test_with_a_max_lag_a_recently_changed_key_reads_the_primary(stack, redis_client, workers, pair) -> None:
    """DB_READ_MAX_LAG_MS (servers that cannot wait on a GTID): a slot changed less than that
    long ago is read from the primary, others from the replica (here: its older rows)."""
    w = workers(pair.invalidator_env(stack))
    env = pair.api_env(stack, w.prefix, DB_READ_MAX_LAG_MS="600000")
    ks = Keyspace(prefix=w.prefix)
    changed, other = IDS[2], next(i for i in range(300, 400)
                                  if key_slot(ks.user(i)) != key_slot(ks.user(IDS[2])))
    with pair.behind():
        name = await change(pair, redis_client, w, [changed, other], "Lagged")
        # the other key's slot last changed long ago (in 1970: the node's mark, and none of its own)
        redis_client.delete(ks.slot_watermark(key_slot(ks.user(other))))
        redis_client.set(ks.node_watermark(), b"1000 " + applied(redis_client, w).encode())
        async with running(env) as (app, client):
            reasons = Delta(metric("primary_reads_total", reason="lag"))
            fresh = await client.get(f"/user/{changed}")
            old = await client.get(f"/user/{other}")
            assert reasons() == [1]
    assert names([fresh]) == [f"{name} {changed}"]
    assert names([old]) != [f"{name} {other}"]  # the bound is the setting, not a GTID


async def test_an_unreachable_replica_sends_reads_to_the_primary(stack, redis_client, workers, pair,
                                                                  tmp_path_factory) -> None:
    w = workers(pair.invalidator_env(stack))
    gone = MariaDB(tmp_path_factory.mktemp("never"), server_id=9)  # a free port nobody listens on
    env = {**pair.api_env(stack, w.prefix), "DB_READ_PORT": str(gone.port), "DB_CONNECT_TIMEOUT_S": "0.5"}
    async with running(env) as (app, client):
        unprobed = Delta(metric("primary_reads_total", reason="unprobed"))
        response = await client.get(f"/user/{IDS[3]}")
        health = await client.get("/health")
    assert response.status_code == 200 and unprobed() == [1]
    assert (health.status_code, health.json()["status"]) == (200, "degraded")
    assert health.json()["mysql_read"]["state"] == "down"


async def test_a_read_address_that_is_the_primary_waits_for_nothing(stack, redis_client, workers, pair) -> None:
    w = workers(pair.invalidator_env(stack))
    env = {**pair.api_env(stack, w.prefix), "DB_READ_HOST": "localhost", "DB_READ_PORT": str(pair.primary.port)}
    async with running(env) as (app, client):
        assert app.state.services.db.server.kind == "primary"
        waits = Delta(metric("replica_waits_total", result="ok"), metric("replica_waits_total", result="timeout"))
        await client.get(f"/user/{IDS[4]}")
        health = await client.get("/health")
    assert waits() == [0, 0] and health.json()["mysql_read"]["role"] == "primary"


# ---------------------------------------------------------------- the invalidator's marks


@pytest.mark.redis_kinds("single", "cluster")
def test_the_invalidator_marks_the_slots_it_changes(stack, redis_client, workers, pair) -> None:
    w = workers(pair.invalidator_env(stack))
    ks = w.keyspace
    if stack.cluster:  # a leader starting gives every slot a watermark
        assert all(redis_client.exists(ks.slot_watermark(s)) for s in (0, 8191, 16383))
    else:
        assert redis_client.exists(ks.node_watermark())
    key = ks.user(IDS[5])
    last = update(pair.primary, [IDS[5]], tag("Marked"))
    wait_applied(redis_client, w, last)
    mark = watermark(redis_client.get(ks.slot_watermark(key_slot(key))))
    assert mark is not None and gtid.covers(gtid.MARIADB, mark[1], last)
    assert gtid.covers(gtid.MARIADB, applied(redis_client, w), last)


def test_with_no_slot_marks_every_batch_marks_the_node(stack, redis_client, workers, pair) -> None:
    """INVALIDATOR_WATERMARK_SLOTS_MAX=0 on one Redis node: the global variant."""
    w = workers(pair.invalidator_env(stack), INVALIDATOR_WATERMARK_SLOTS_MAX="0")
    ks = w.keyspace
    key = ks.user(IDS[6])
    last = update(pair.primary, [IDS[6]], tag("Node"))
    wait_applied(redis_client, w, last)
    assert not redis_client.exists(ks.slot_watermark(key_slot(key)))
    assert watermark(redis_client.get(ks.node_watermark()))[1] == last
