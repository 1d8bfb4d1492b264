"""Reading one's own write: ``Cachetail-Min-GTID`` (api/freshness.py), on real servers.

The window is forced, never hoped for: the invalidator is paused with SIGSTOP between a
write and its read, and a worker's tracking socket stops being read while the invalidation
it carries is applied elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cachetail.keyspace import Keyspace
from support.api import Delta, api_process, assert_json_error, running
from support.invalidator import WorkerProcess
from support.replication import applied, metric, tag, update, wait_applied_async
from support.waiting import wait_for_async

pytestmark = pytest.mark.anyio
HEADER = "Cachetail-Min-GTID"
USER = 250


def name_of(response: Any) -> str:
    return str(json.loads(response.content)["full_name"])


@pytest.fixture
def paused() -> Iterator[list[WorkerProcess]]:
    """Workers a test paused (SIGSTOP) are let go (SIGCONT) however it ends."""
    stopped: list[WorkerProcess] = []
    yield stopped
    for w in stopped:
        w.signal(signal.SIGCONT)


def pause(w: WorkerProcess, paused: list[WorkerProcess]) -> None:
    w.signal(signal.SIGSTOP)
    paused.append(w)


@pytest.mark.redis_kinds("single", "cluster")
async def test_a_read_with_its_writes_gtid_waits_until_the_invalidator_applied_it(
        stack, redis_client, workers, paused, nearcache) -> None:
    """The write's next read falls inside the invalidator's lag (here: the invalidator is
    paused).  Without the header the old row is served; with it the read waits, is let go
    by the invalidation, and answers the new row."""
    w = workers(stack.invalidator_env())
    async with running({**stack.api_env(), "CACHE_KEY_PREFIX": w.prefix,
                        "API_MIN_GTID_WAIT_MS": "10000"}) as (app, client):
        await client.get(f"/user/{USER}")
        old = await client.get(f"/user/{USER}")
        pause(w, paused)
        written = update(stack.mariadb, [USER], name := tag("Own"))
        stale = await client.get(f"/user/{USER}")
        waits = Delta(metric("min_gtid_waits_total", result="ok"))
        reading = asyncio.ensure_future(client.get(f"/user/{USER}", headers={HEADER: written}))
        await wait_for_async(lambda: app.state.services.applied._waiters == 1, 10, "the read waiting for its GTID")
        assert not reading.done()
        w.signal(signal.SIGCONT)
        fresh = await reading
        again = await client.get(f"/user/{USER}", headers={HEADER: written})
    assert name_of(stale) == name_of(old) != f"{name} {USER}"  # what the header is for
    assert (name_of(fresh), fresh.headers["x-cache"]) == (f"{name} {USER}", "MISS")
    assert name_of(again) == f"{name} {USER}" and again.headers["x-cache"] == "HIT"
    assert waits() == [1]


@pytest.mark.redis_kinds("single", "cluster")
async def test_a_gtid_not_applied_in_time_is_read_from_the_primary_and_not_stored(
        stack, redis_client, workers, paused) -> None:
    w = workers(stack.invalidator_env())
    ks = Keyspace(prefix=w.prefix)
    async with running({**stack.api_env(), "CACHE_KEY_PREFIX": w.prefix,
                        "API_MIN_GTID_WAIT_MS": "50"}) as (app, client):
        await client.get(f"/user/{USER + 1}")
        cached = redis_client.get(ks.user(USER + 1))
        pause(w, paused)
        written = update(stack.mariadb, [USER + 1], name := tag("Late"))
        waits = Delta(metric("min_gtid_waits_total", result="timeout"),
                      metric("cache_lookups_total", entity="user", result="primary"))
        late = await client.get(f"/user/{USER + 1}", headers={HEADER: written})
        nocache = await client.get(f"/user/{USER + 1}/nocache", headers={HEADER: written})
        listed = await client.get("/products", headers={HEADER: written})
    assert (name_of(late), late.headers["x-cache"]) == (f"{name} {USER + 1}", "PRIMARY")
    assert name_of(nocache) == f"{name} {USER + 1}"
    assert listed.status_code == 200 and listed.headers["x-cache"] == "PRIMARY"
    assert redis_client.get(ks.user(USER + 1)) == cached  # nothing stored, nothing lost
    assert waits() == [2, 1]


async def test_a_gtid_from_a_domain_the_invalidator_never_saw_is_not_applied(
        stack, redis_client, workers) -> None:
    w = workers(stack.invalidator_env())
    async with running({**stack.api_env(), "CACHE_KEY_PREFIX": w.prefix,
                        "API_MIN_GTID_WAIT_MS": "20"}) as (app, client):
        await client.get(f"/user/{USER + 2}")
        known = applied(redis_client, w)
        unknown = await client.get(f"/user/{USER + 2}", headers={HEADER: "77-1-5"})
        both = await client.get(f"/user/{USER + 2}", headers={HEADER: f"{known},77-1-5"})
        seen = await client.get(f"/user/{USER + 2}", headers={HEADER: known})
    assert [r.headers["x-cache"] for r in (unknown, both, seen)] == ["PRIMARY", "PRIMARY", "HIT"]


@pytest.mark.parametrize("value", ["abc", "0-1", "0-1-x", "0-1-1, 0-2-2", "0-1-1,", "-1-1-1", "0-1-1;0",
                                   "3e11fa47-71ca-11e1-9e33-c80aa9429562:23", "0-1-1-1",
                                   " ", "0-1-1\u00e9"])
async def test_a_malformed_min_gtid_is_a_400(stack, redis_client, value: str) -> None:
    async with running(stack.api_env()) as (app, client):
        for path in ("/user/1", "/user/1/nocache", "/products"):
            response = await client.get(path, headers={HEADER: value.encode("utf-8")})
            body = assert_json_error(response, 400)
            assert body["error"] == "invalid_min_gtid" and "MariaDB GTID" in body["detail"]


@pytest.mark.redis_kinds("single", "cluster")
async def test_a_near_cache_hit_waits_until_the_worker_heard_the_invalidation(
        stack, redis_client, workers) -> None:
    """The invalidator has applied the write and Redis has sent the invalidation, but this
    worker has not read it yet (its tracking socket is paused): a plain read is served the
    old row from the near-cache; a read with the write's GTID waits for the worker to hear it."""
    w = workers(stack.invalidator_env())
    async with running({**stack.api_env(), "CACHE_KEY_PREFIX": w.prefix, "NEARCACHE": "1"}) as (app, client):
        svc = app.state.services
        await client.get(f"/user/{USER + 3}")  # filled into Redis
        await client.get(f"/user/{USER + 3}")  # kept by the near-cache
        cached = await client.get(f"/user/{USER + 3}")
        assert cached.headers["x-cache-tier"] == "near"
        sockets = [c._transport for c in _tracking(svc)]
        for transport in sockets:
            transport.pause_reading()
        written = update(stack.mariadb, [USER + 3], name := tag("Heard"))
        await wait_applied_async(redis_client, w, written)
        stale = await client.get(f"/user/{USER + 3}")
        reading = asyncio.ensure_future(client.get(f"/user/{USER + 3}", headers={HEADER: written}))
        await wait_for_async(lambda: svc.applied._barrier is not None, 10, "the read behind the tracking barrier")
        assert not reading.done()
        for transport in sockets:
            transport.resume_reading()
        fresh = await reading
    assert (name_of(stale), stale.headers["x-cache-tier"]) == (name_of(cached), "near")
    assert name_of(fresh) == f"{name} {USER + 3}" and fresh.headers.get("x-cache-tier") != "near"


def _tracking(svc: Any) -> list[Any]:
    tracker = svc.tracker
    if hasattr(tracker, "_conns"):
        return list(tracker._conns.values())
    return [tracker._conn]


async def test_a_read_with_a_gtid_waits_on_a_lagging_replica(stack, redis_client, workers, pair) -> None:
    """With a replica: the invalidator applied the write, the replica has not.  The fill's
    watermark covers the write, so it goes to the primary after DB_READ_WAIT_MS; the nocache
    route waits for the GTID itself.  Without the header, nocache answers the replica's row."""
    w = workers(pair.invalidator_env(stack))
    async with running(pair.api_env(stack, w.prefix)) as (app, client):
        await client.get(f"/user/{USER + 4}")
        with pair.behind():
            written = update(pair.primary, [USER + 4], name := tag("Replica"))
            await wait_applied_async(redis_client, w, written)
            cached = await client.get(f"/user/{USER + 4}", headers={HEADER: written})
            direct = await client.get(f"/user/{USER + 4}/nocache", headers={HEADER: written})
            plain = await client.get(f"/user/{USER + 4}/nocache")
    assert name_of(cached) == name_of(direct) == f"{name} {USER + 4}"
    assert name_of(plain) != f"{name} {USER + 4}"  # the replica, as fresh as it is


@pytest.mark.redis_kinds("single", "cluster")
async def test_a_waiting_read_is_woken_by_the_published_state_not_by_polling(
        stack, redis_client, workers, paused, monkeypatch) -> None:
    """The invalidator publishes its applied state (SPUBLISH on a cluster); a waiting worker
    subscribes and is woken by it.  Polling is pushed out of reach to show it."""
    from api import freshness

    monkeypatch.setattr(freshness, "POLL_S", 3600.0)
    monkeypatch.setattr(freshness, "POLL_SUBSCRIBED_S", 3600.0)
    w = workers(stack.invalidator_env())
    async with running({**stack.api_env(), "CACHE_KEY_PREFIX": w.prefix,
                        "API_MIN_GTID_WAIT_MS": "10000"}) as (app, client):
        watch = app.state.services.applied
        await client.get(f"/user/{USER + 5}")
        pause(w, paused)
        written = update(stack.mariadb, [USER + 5], name := tag("Published"))
        reading = asyncio.ensure_future(client.get(f"/user/{USER + 5}", headers={HEADER: written}))
        await wait_for_async(lambda: watch._waiters == 1 and watch._subscribed, 10, "the read waiting, subscribed")
        reads: list[None] = []
        monkeypatch.setattr(watch, "refresh", lambda: reads.append(None) or asyncio.sleep(0))
        w.signal(signal.SIGCONT)
        fresh = await reading
    assert name_of(fresh) == f"{name} {USER + 5}" and reads == []


def test_the_readmes_write_then_read_example_runs(stack, redis_client, workers, tmp_path) -> None:
    """README "Read your own writes": its example, against this stack's MariaDB and an API process."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Read your own writes", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    w = workers(stack.invalidator_env())
    with api_process({**stack.api_env(), "CACHE_KEY_PREFIX": w.prefix}, tmp_path) as (url, _):
        httpx.get(f"{url}/user/42")  # cached: the example must not read the old row
        name = tag("Grace B. Hopper")
        code = (code.replace("port=13306", f"port={stack.mariadb.port}")
                .replace("http://127.0.0.1:5000", url).replace('"Grace B. Hopper"', repr(name)))
        assert code.count(repr(name)) == 2 and url in code
        exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - the README's own example


def test_the_known_applied_state_only_moves_forward() -> None:
    """A published state and a GET's reply travel on different connections: the GET's older
    reply may be handled after the newer message.  It must not take the state back (it did:
    a read then waited for the next transaction, or the 50 ms poll)."""
    from api.freshness import AppliedWatch
    from cachetail import gtid as g

    watch = AppliedWatch(Keyspace(), lean=None, locate=None, cluster=False,
                         flavor=lambda: g.MARIADB)
    watch._update(b"0-1-9,1-1-4")  # heard first
    watch._update(b"0-1-7,1-1-5")  # read before it, handled after: one domain older, one newer
    assert str(watch.state) == "0-1-9,1-1-5"
    assert watch.covers(g.parse(g.MARIADB, "0-1-9")) and watch.covers(g.parse(g.MARIADB, "1-1-5"))
