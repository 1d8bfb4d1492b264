"""The lean Redis connection (api/lean.py) against real Redis servers: pipelining,
order under errors and cancellation, timeouts, reconnects, AUTH and SELECT."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from api.lean import LeanRedis
from cachetail.settings import RedisSettings
from support.waiting import wait_for_async

pytestmark = pytest.mark.anyio


def settings(server, **extra: str) -> RedisSettings:
    return RedisSettings.from_env({"REDIS_HOST": server.host, "REDIS_PORT": str(server.port), **extra})


def lean_clients(client: redis.Redis, name: str = "cachetail-api") -> list[dict[str, str]]:
    return [c for c in client.client_list() if c["name"] == name]


async def test_concurrent_reads_share_one_connection_and_keep_order(stack, redis_client) -> None:
    for i in range(300):
        redis_client.set(f"lean:{i}", f"value-{i}".encode() * (1 + i % 50))
    redis_client.set("lean:ttl", b"x", px=60_000)
    lean = LeanRedis(settings(stack.redis))
    try:
        got = await asyncio.gather(*(lean.get(f"lean:{i}") for i in range(300)),
                                   lean.get("lean:absent"), lean.mget("lean:1", "lean:absent", "lean:2"),
                                   lean.get_with_pttl("lean:ttl"), lean.get_with_pttl("lean:1"),
                                   lean.get_with_pttl("lean:absent"))
        assert lean_clients(redis_client) and len(lean_clients(redis_client)) == 1
    finally:
        await lean.close()
    assert got[:300] == [f"value-{i}".encode() * (1 + i % 50) for i in range(300)]
    assert got[300] is None
    assert got[301] == [b"value-1" * 2, None, b"value-2" * 3]
    value, pttl = got[302]
    assert value == b"x" and 59_000 < pttl <= 60_000
    assert got[303] == (b"value-1" * 2, -1) and got[304] == (None, -2)
    # the socket closes on the loop's next turns
    await wait_for_async(lambda: lean_clients(redis_client) == [], 1, "the lean connection closed")


async def test_an_error_reply_fails_its_caller_only(stack, redis_client) -> None:
    redis_client.set("lean:a", b"A")
    redis_client.rpush("lean:list", b"x")
    lean = LeanRedis(settings(stack.redis))
    try:
        a, wrong, b = await asyncio.gather(lean.get("lean:a"), lean.get("lean:list"),
                                           lean.get("lean:a"), return_exceptions=True)
    finally:
        await lean.close()
    assert (a, b) == (b"A", b"A")
    assert isinstance(wrong, ResponseError) and "WRONGTYPE" in str(wrong)


async def test_a_cancelled_caller_does_not_shift_the_replies(stack, redis_client) -> None:
    for i in range(50):
        redis_client.set(f"lean:c{i}", str(i).encode())
    lean = LeanRedis(settings(stack.redis))
    try:
        await lean.get("lean:c0")  # connected
        tasks = [asyncio.ensure_future(lean.get(f"lean:c{i}")) for i in range(50)]
        await asyncio.sleep(0)  # every command written
        for task in tasks[::3]:
            task.cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        after = await lean.get("lean:c7")
    finally:
        await lean.close()
    for i, result in enumerate(done):
        if i % 3:
            assert result == str(i).encode()
        else:
            assert isinstance(result, asyncio.CancelledError)
    assert after == b"7"


async def test_a_killed_idle_connection_is_replaced_on_next_use(stack, redis_client) -> None:
    redis_client.set("lean:k", b"K")
    lean = LeanRedis(settings(stack.redis))
    try:
        assert await lean.get("lean:k") == b"K"
        (first,) = lean_clients(redis_client)
        conn = lean._conn
        assert conn is not None
        redis_client.client_kill_filter(_id=first["id"])
        # the close reaches the client: it knows before the next call
        await wait_for_async(lambda: not conn.is_open, 2, "the close reaching the client")
        assert await lean.get("lean:k") == b"K"
        (second,) = lean_clients(redis_client)
    finally:
        await lean.close()
    assert second["id"] != first["id"]


async def test_calls_in_flight_fail_at_once_when_the_server_dies(redis_factory) -> None:
    server = redis_factory()
    lean = LeanRedis(settings(server, REDIS_TIMEOUT_S="5"))
    try:
        assert await lean.get("k") is None
        os.kill(server.proc.pid, signal.SIGSTOP)
        in_flight = [asyncio.ensure_future(lean.get("k")) for _ in range(5)]
        conn = lean._conn
        assert conn is not None
        await wait_for_async(lambda: not conn._corked, 2, "the five GETs written to the socket")
        started = time.monotonic()
        server.kill()  # SIGKILL: the kernel closes its sockets
        results = await asyncio.gather(*in_flight, return_exceptions=True)
        elapsed = time.monotonic() - started
        server.start()
        assert await lean.get("k") is None  # a new connection to the new server
    finally:
        await lean.close()
    assert all(isinstance(r, RedisConnectionError) for r in results), results
    assert elapsed < 1.0  # the loss, not the 5 s timeout


async def test_a_hung_server_costs_one_bounded_timeout(redis_factory) -> None:
    server = redis_factory()
    lean = LeanRedis(settings(server, REDIS_TIMEOUT_S="0.2"))
    try:
        assert await lean.get("k") is None
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            results = await asyncio.gather(*(lean.get("k") for _ in range(20)), return_exceptions=True)
            elapsed = time.monotonic() - started
            reconnect_started = time.monotonic()
            with pytest.raises(RedisTimeoutError):  # the kernel accepts, the server never answers
                await lean.get("k")
            reconnect_elapsed = time.monotonic() - reconnect_started
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        assert await lean.get("k") is None
    finally:
        await lean.close()
    assert all(isinstance(r, RedisTimeoutError) for r in results), results
    assert 0.15 < elapsed < 1.0 and 0.15 < reconnect_elapsed < 1.0


async def test_auth_and_database_selection(redis_factory) -> None:
    server = redis_factory(password="lean-secret-pw")
    admin = redis.Redis(host=server.host, port=server.port, password="lean-secret-pw", db=3)
    admin.set("lean:db3", b"in three")
    good = LeanRedis(settings(server, REDIS_PASSWORD="lean-secret-pw", REDIS_DB="3"))
    bad = LeanRedis(settings(server, REDIS_PASSWORD="wrong-pw"))
    none = LeanRedis(settings(server))
    try:
        assert await good.get("lean:db3") == b"in three"
        with pytest.raises(RedisConnectionError) as refused:
            await bad.get("lean:db3")
        with pytest.raises(RedisConnectionError):
            await none.get("lean:db3")
    finally:
        for client in (good, bad, none):
            await client.close()
        admin.close()
    assert "WRONGPASS" in str(refused.value) and "wrong-pw" not in str(refused.value)


async def test_unreachable_server_is_a_connection_error(stack) -> None:
    from cachetail.devstack import free_port

    lean = LeanRedis(RedisSettings.from_env({"REDIS_PORT": str(free_port())}))
    try:
        with pytest.raises(RedisConnectionError):
            await lean.get("k")
    finally:
        await lean.close()
