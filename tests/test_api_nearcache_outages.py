"""The near-cache (api/nearcache.py, api/tracking.py) when the promise to announce is broken
(tracking lost, Redis restarted, hung or refusing CLIENT): emptied and bypassed until
restored; and with many workers, each invalidated."""

from __future__ import annotations

import logging
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis

from cachetail.keyspace import Keyspace
from support.api import Delta, api_process, running
from support.nearcache import near, tiers, tracking_clients
from support.waiting import wait_for, wait_for_async

pytestmark = pytest.mark.anyio
KEYS = Keyspace()


# ------------------------------------------------- the promise is broken


async def test_killed_tracking_connection_empties_and_bypasses_until_restored(stack, redis_client) -> None:
    lost = Delta(("cachetail_nearcache_resets_total", {"reason": "disconnected"}))
    async with running(stack.api_env()) as (app, client):
        svc = app.state.services
        for user_id in (11, 12, 13):
            for _ in range(2):
                await client.get(f"/user/{user_id}")
        assert svc.near.entries == 3
        (before,) = tracking_clients(redis_client)
        before["node"].client_kill_filter(_id=before["id"])
        started = time.monotonic()
        await wait_for_async(lambda: lost() == [1], 1, "the loss noticed")
        noticed = time.monotonic() - started
        assert svc.near.entries == 0
        changed = b'{"id":11,"changed":"while tracking was down"}'
        redis_client.set(KEYS.user(11), changed)  # announced to nobody
        meanwhile = await client.get("/user/11")
        await wait_for_async(lambda: svc.near.live, 3, "tracking back")
        (after,) = tracking_clients(redis_client)
        again = [await client.get("/user/11") for _ in range(2)]
    assert noticed < 0.5
    assert (meanwhile.content, meanwhile.headers["x-cache-tier"]) == (changed, "redis")
    assert after["id"] != before["id"]
    assert [r.content for r in again] == [changed] * 2 and tiers(again) == ["redis", "near"]


async def test_redis_restart_empties_bypasses_then_tracks_the_new_server(stack, redis_factory) -> None:
    server = redis_factory()
    env = {**stack.api_env(), "REDIS_HOST": server.host, "REDIS_PORT": str(server.port),
           "API_REDIS_BREAKER_S": "0.1"}
    bypassed = Delta(near("bypass"))
    async with running(env) as (app, client):
        svc = app.state.services
        warm = [await client.get("/user/5") for _ in range(3)]
        server.stop()
        await wait_for_async(lambda: not svc.near.live, 1, "the loss noticed")
        down = [await client.get("/user/5") for _ in range(3)]
        server.start()  # same port, empty: nothing the near-cache held is there
        await wait_for_async(lambda: svc.near.live, 5, "tracking the new server")

        async def past_the_breaker() -> httpx.Response | None:
            answer = await client.get("/user/5")
            return None if answer.headers["x-cache"] == "BYPASS" else answer

        # the breaker's period; redis-py's pool finds its dead sockets
        first = await wait_for_async(past_the_breaker, 10, "a read past the breaker", 0.05)
        back = [first] + [await client.get("/user/5") for _ in range(2)]
    assert tiers(warm) == [None, "redis", "near"]
    assert {r.headers["x-cache"] for r in down} == {"BYPASS"} and svc.near.entries == 0
    assert [r.headers["x-cache"] for r in back] == ["MISS", "HIT", "HIT"]  # a new, empty server
    assert tiers(back) == [None, "redis", "near"]
    assert {r.content for r in back} == {warm[0].content}
    assert bypassed()[0] >= 3


async def test_a_hung_redis_ends_tracking_within_the_timeout(stack, redis_factory) -> None:
    server = redis_factory()
    env = {**stack.api_env(), "REDIS_HOST": server.host, "REDIS_PORT": str(server.port),
           "REDIS_TIMEOUT_S": "0.2"}
    timeouts = Delta(("cachetail_nearcache_resets_total", {"reason": "heartbeat"}))
    async with running(env) as (app, client):
        svc = app.state.services
        for _ in range(2):
            await client.get("/user/8")
        assert svc.near.entries == 1
        os.kill(server.proc.pid, signal.SIGSTOP)  # a silent partition looks the same
        try:
            started = time.monotonic()
            await wait_for_async(lambda: not svc.near.live, 2, "the heartbeat gave up")
            took = time.monotonic() - started
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        assert svc.near.entries == 0
        await wait_for_async(lambda: svc.near.live, 5, "tracking back")
    assert took < 0.2 + 0.1 + 0.3  # timeout + heartbeat interval + slack
    assert timeouts() == [1]


async def test_an_acl_without_client_commands_leaves_it_off_and_reads_working(
        stack, redis_factory, caplog: pytest.LogCaptureFixture) -> None:
    server = redis_factory(password="admin-pw")
    admin = redis.Redis(host=server.host, port=server.port, password="admin-pw")
    admin.acl_setuser("reader", enabled=True, passwords=["+reader-pw"], keys=["*"],
                      commands=["+@all", "-client"])
    env = {**stack.api_env(), "REDIS_HOST": server.host, "REDIS_PORT": str(server.port),
           "REDIS_USERNAME": "reader", "REDIS_PASSWORD": "reader-pw"}
    with caplog.at_level(logging.WARNING, logger="api"):
        async with running(env) as (app, client):
            answers = [await client.get("/user/14") for _ in range(3)]
            assert not app.state.services.near.live
    admin.close()
    assert [r.headers["x-cache"] for r in answers] == ["MISS", "HIT", "HIT"]
    assert tiers(answers) == [None, "redis", "redis"]
    assert "cannot establish tracking" in caplog.text and "NOPERM" in caplog.text
    assert "reader-pw" not in caplog.text


# ----------------------------------------------------------- many workers


@pytest.mark.redis_kinds("single", "cluster")
def test_every_worker_is_invalidated(stack, db, redis_client, workers, tmp_path) -> None:
    """`python -m api --workers 2` and the invalidator: each worker keeps its own near-cache,
    and a write through MySQL or a clear reaches both."""
    worker = workers(stack.invalidator_env(), wait_streaming=False)  # starts beside the API
    metrics_dir = tmp_path / "prom-multiproc"
    metrics_dir.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DB_", "REDIS_", "CACHE_", "API_", "ADMIN_", "PROMETHEUS_", "NEAR"))}
    env.update(stack.api_env(), CACHE_KEY_PREFIX=worker.prefix,
               PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    name = f"Every Worker {worker.prefix}"
    with api_process(env, tmp_path, "--workers", "2") as (url, _):

        def stats() -> dict:
            return httpx.get(url + "/cache/stats", timeout=5).json()["nearcache"]

        def read(user_id: int) -> httpx.Response:
            with httpx.Client(base_url=url, timeout=5) as fresh:  # new connections spread
                return fresh.get(f"/user/{user_id}")

        wait_for(lambda: stats()["workers_tracking"] == 2, what="both workers tracking")
        wait_for(lambda: worker.metric("cachetail_invalidator_streaming") == 1, 20, "the invalidator")
        with ThreadPoolExecutor(8) as pool:
            warm = list(pool.map(read, [1 + i % 10 for i in range(120)]))
            assert {r.status_code for r in warm} == {200}
            assert stats()["entries"] > 10  # ten ids, so both workers hold some
            with db.cursor() as cur:
                cur.execute("UPDATE users SET full_name = %s WHERE id = 7", (name,))
            wait_for(lambda: redis_client.exists(worker.keyspace.user(7)) == 0,
                     what="the invalidator's delete")
            time.sleep(0.05)  # the bound: announced to every worker well within this
            after = list(pool.map(read, [7] * 30))
            assert {r.json()["full_name"] for r in after} == {name}
            cleared = httpx.post(url + "/cache/clear", timeout=5,
                                 headers={"Authorization": f"Bearer {env['ADMIN_TOKEN']}"})
            assert cleared.status_code == 200
            time.sleep(0.05)  # the bound again: the clear announced to every worker within it
            assert stats()["entries"] == 0
        hits = stats()["hits"]
    assert hits > 50
    assert worker.stop() == 0
