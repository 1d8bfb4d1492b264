"""The consistency auditor against real servers: it finds what is wrong, and only that."""

from __future__ import annotations

import asyncio
import random
import threading
import time

import pytest

from cachetail.keyspace import NEGATIVE, Keyspace, stamp
from support.api import running
from support.invalidator import WorkerProcess
from support.lab import products_generation, products_page, user_bytes
from support.stack import Stack
from support.waiting import wait_for

pytestmark = pytest.mark.redis_kinds("single", "cluster")
INCONSISTENT = 'cachetail_audit_checks_total{kind="%s",result="inconsistent"}'
CONSISTENT = 'cachetail_audit_checks_total{kind="%s",result="consistent"}'


def audited(stack: Stack, workers, **settings: str) -> WorkerProcess:
    w: WorkerProcess = workers(stack.invalidator_env(), **{"AUDIT": "true", **settings})
    return w


def row_bytes(db, user_id: int) -> bytes:
    import pymysql

    with db.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute("SELECT * FROM users WHERE id = %s", (user_id,))
        return user_bytes(db, cur.fetchone())


def test_the_sampler_finds_and_repairs_what_was_written_into_redis(stack: Stack, db, redis_client,
                                                                   workers) -> None:
    """Stale values put straight into Redis, as a lost invalidation would leave them: a user,
    a cached 404 of a row that exists, a product list page stamped with its live generation.
    At 50 keys a second over a handful of keys, each is found within a sweep or two."""
    w = audited(stack, workers, AUDIT_SAMPLE_KEYS_PER_S="50", AUDIT_INVALIDATION_SHARE="0")
    ks = w.keyspace
    good = row_bytes(db, 8)
    redis_client.set(ks.user(8), good)  # right: stays
    redis_client.set(ks.user(7), row_bytes(db, 7).replace(b'"full_name":"', b'"full_name":"Stale '))
    redis_client.set(ks.user(9), NEGATIVE)
    gen_key, page_key = products_generation(ks, db, "books"), products_page(ks, db, "books")
    redis_client.set(gen_key, 41)
    redis_client.set(page_key, stamp(41, b'[{"id":1,"name":"stale","category":"books"}]'))
    started = time.monotonic()
    wait_for(lambda: not redis_client.exists(ks.user(7), ks.user(9), page_key), 20,
             what="every stale key repaired")
    took = time.monotonic() - started
    print(f"three stale keys found and repaired in {took:.2f} s at AUDIT_SAMPLE_KEYS_PER_S=50")
    # the key goes first, then the count: wait for it
    wait_for(lambda: w.metric(INCONSISTENT % "sample") == 3, what="three inconsistencies counted")
    assert w.metric("cachetail_audit_repairs_total") == 3
    assert redis_client.get(ks.user(8)) == good
    wait_for(lambda: w.metric(CONSISTENT % "sample") >= 1, what="the right key checked too")
    assert "INCONSISTENT (sample check) user" in w.log()


def test_an_invalidation_overtaken_by_a_stale_write_is_reported(stack: Stack, db, redis_client,
                                                                workers) -> None:
    """Forced: the invalidator deletes the key, then the old bytes come back (what a lost
    invalidation leaves).  The delayed check of that transaction's key reports it."""
    w = audited(stack, workers, AUDIT_SAMPLE_KEYS_PER_S="0", AUDIT_INVALIDATION_SHARE="1",
                AUDIT_DELAY_S="0.5")
    ks = w.keyspace
    old = row_bytes(db, 21)
    redis_client.set(ks.user(21), old)
    with db.cursor() as cur:
        cur.execute("UPDATE users SET full_name = CONCAT(full_name, '#') WHERE id = 21")
    wait_for(lambda: not redis_client.exists(ks.user(21)), what="the invalidation applied")
    redis_client.set(ks.user(21), old)
    wait_for(lambda: w.metric(INCONSISTENT % "invalidation") == 1, 15, what="the overtaken invalidation reported")
    assert not redis_client.exists(ks.user(21))
    wait_for(lambda: w.metric("cachetail_audit_detection_seconds_count") == 1, what="its detection time observed")
    assert w.metric(INCONSISTENT % "sample") == 0


@pytest.mark.anyio
async def test_writes_reads_and_fills_for_30_s_report_no_inconsistency(stack: Stack, db, redis_client, workers,
                                                                       anyio_backend) -> None:
    """500 writes a second to 200 users, readers filling and hitting them through the API, the
    auditor checking a key of every transaction 50 ms after it was applied and sweeping at 100
    keys a second: every mismatch it sees is a change in flight, and none may be reported.
    (Without the confirmation step, checked: dozens are.)"""
    w = audited(stack, workers, AUDIT_SAMPLE_KEYS_PER_S="100", AUDIT_INVALIDATION_SHARE="1",
                AUDIT_DELAY_S="0.05", AUDIT_DB_QUERIES_PER_S="500")
    ids = list(range(5001, 5201))
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        conn = stack.mariadb.connect(database="cachelab")
        next_at = time.monotonic()
        with conn.cursor() as cur:
            while not stop.is_set():
                cur.execute("UPDATE users SET full_name = CONCAT(LEFT(full_name, 60), '.') WHERE id = %s",
                            (random.choice(ids),))
                written[0] += 1
                next_at += 1 / 500
                stop.wait(max(0.0, next_at - time.monotonic()))
        conn.close()

    thread = threading.Thread(target=writer)
    thread.start()
    reads = 0
    try:
        async with running(stack.api_env(), CACHE_KEY_PREFIX=w.prefix) as (_, client):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                answers = await asyncio.gather(*(client.get(f"/user/{random.choice(ids)}") for _ in range(20)))
                assert {a.status_code for a in answers} == {200}
                reads += len(answers)
    finally:
        stop.set()
        thread.join()
    checks = sum(w.metric(CONSISTENT % k) for k in ("sample", "invalidation"))
    print(f"{written[0]} writes, {reads} reads, {checks:.0f} audit checks, 0 inconsistent expected")
    assert written[0] > 5000 and checks > 500
    assert w.metric(INCONSISTENT % "sample") == 0 and w.metric(INCONSISTENT % "invalidation") == 0
    assert "INCONSISTENT" not in w.log()


def test_the_auditor_is_on_by_default_and_can_be_switched_off(stack: Stack, workers) -> None:
    import json
    import urllib.request

    def health(w: WorkerProcess) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{w.port}/health", timeout=5) as r:
            return dict(json.loads(r.read()))

    assert health(audited(stack, workers, AUDIT=""))["audit"] is True  # unset: the default
    off = audited(stack, workers, AUDIT="false")
    assert health(off)["audit"] is False
    assert "consistency auditor off (AUDIT=false)" in off.log()


def test_keys_are_named_back_into_what_they_cache(stack: Stack, db) -> None:
    from invalidator.truth import Truth
    from support.lab import catalog

    truth = Truth(catalog(db), Keyspace())
    ks = Keyspace()

    def query(sql: str, args: tuple[str, ...]) -> tuple[str, ...]:
        with db.cursor() as cur:
            cur.execute(sql, args)
            return tuple(str(v) for v in cur.fetchone())

    user = truth.target(ks.user(42), None, query)
    assert user is not None and user.values == (42,) and user.name == "user"
    page = products_page(ks, db, "books")
    found = truth.target(page, stamp(5, b'[{"id":1,"category":"Books"}]'), query)
    assert found is not None and [(f.param, v) for f, v in found.filters] == [("category", "Books")]
    assert truth.target(page, stamp(5, b"[]"), query) is None  # a weight cannot be named back
    assert truth.target(products_page(ks, db), None, query).filters == ()
    assert truth.target(ks.invalidator_position(), None, query) is None
