"""The lean path on Redis Cluster (api/clusterlean.py) against a real 3+3 cluster:
routing by slot over one connection per primary, MOVED and ASK, a failover, the
slot map from CLUSTER SHARDS and CLUSTER SLOTS, and redis-py's exceptions."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from api.clusterlean import ClusterLean
from api.clustermap import parse_shards, parse_slots
from cachetail.devstack import RedisCluster
from cachetail.keyspace import key_slot
from cachetail.settings import RedisSettings
from support.api import Delta
from support.waiting import wait_for_async

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A private cluster: these tests move slots and fail primaries over."""
    started = RedisCluster(tmp_path_factory.mktemp("lean-cluster"))
    try:
        started.start()
        yield started
    finally:
        started.kill()


def seed(cluster: RedisCluster) -> int:
    """The port of a running node (a test above may have killed the first one)."""
    return next(n.port for n in cluster.nodes if n.running)


def lean_for(cluster: RedisCluster, **extra: str) -> ClusterLean:
    return ClusterLean(RedisSettings.from_env({
        "REDIS_HOST": cluster.host, "REDIS_PORT": str(seed(cluster)), "REDIS_CLUSTER": "1", **extra}))


def client_for(cluster: RedisCluster) -> redis.RedisCluster:
    return redis.RedisCluster(host=cluster.host, port=seed(cluster))


def lean_connections(cluster: RedisCluster) -> dict[int, int]:
    """Per running node, how many connections the lean path holds there."""
    return {node.port: cluster.cli(node, "CLIENT", "LIST").count("name=cachetail-api ")
            for node in cluster.nodes if node.running}


def redirects(kind: str) -> tuple[str, dict[str, str]]:
    return "cachetail_redis_redirects_total", {"kind": kind}


def key_on(cluster: RedisCluster, primary_port: int, stem: str) -> str:
    """A user-like key whose slot the primary on ``primary_port`` serves."""
    for i in range(10_000):
        key = f"lean:{{{stem}{i}}}"
        if cluster.primary_for(key).port == primary_port:
            return key
    raise AssertionError("no such key")


async def test_routes_by_slot_over_one_pipelined_connection_per_primary(cluster) -> None:
    client = client_for(cluster)
    keys = [f"lean:{{u:{i}}}" for i in range(400)]
    for i, key in enumerate(keys):
        client.set(key, f"v{i}".encode() * (1 + i % 7), px=None if i % 2 else 60_000)
    client.set("lean:{p}:gen", b"3")
    client.set("lean:{p}:all", b"list")
    lean = lean_for(cluster)
    try:
        got = await asyncio.gather(*(lean.get(k) for k in keys), lean.get("lean:{u:absent}"),
                                   *(lean.get_with_pttl(k) for k in keys[:4]),
                                   lean.mget("lean:{p}:gen", "lean:{p}:all", "lean:{p}:none"))
        held = lean_connections(cluster)
    finally:
        await lean.close()
        client.close()
    assert got[:400] == [f"v{i}".encode() * (1 + i % 7) for i in range(400)]
    assert got[400] is None
    pairs = got[401:405]
    assert [v for v, _ in pairs] == got[:4]
    assert [ttl == -1 for _, ttl in pairs] == [False, True, False, True]
    assert all(59_000 < ttl <= 60_000 for _, ttl in pairs[::2])
    assert got[405] == [b"3", b"list", None]
    primaries = {p.port for p in cluster.primaries()}
    assert {port: n for port, n in held.items() if n} == {port: 1 for port in primaries}


async def test_the_map_from_cluster_shards_and_cluster_slots_agree(cluster) -> None:
    node = next(n for n in cluster.nodes if n.running)
    client = redis.Redis(host=node.host, port=node.port)
    try:
        shards = parse_shards(client.execute_command("CLUSTER", "SHARDS"), node.host)
        slots = parse_slots(client.execute_command("CLUSTER", "SLOTS"), node.host)
    finally:
        client.close()
    assert shards.covered and slots.covered
    assert [p and (p.node_id, p.port) for p in shards.owners()] == \
        [p and (p.node_id, p.port) for p in slots.owners()]
    assert {p.port for p in shards.primaries} == {p.port for p in cluster.primaries()}


async def test_a_moved_slot_is_followed_and_the_map_patched(cluster) -> None:
    source, target = cluster.primaries()[:2]
    key = key_on(cluster, source.port, "moved")
    slot = key_slot(key)
    client = client_for(cluster)
    client.set(key, b"before the move")
    lean = lean_for(cluster)
    moved, asked = Delta(redirects("moved")), Delta(redirects("ask"))
    try:
        assert await lean.get(key) == b"before the move"  # map loaded, slot on the source
        cluster.begin_migration(slot, source, target)
        cluster.migrate_keys(source, target, key)
        cluster.end_migration(slot, target)
        after = [await lean.get(key) for _ in range(3)]
        assert moved() == [1]  # once: then the slot points at its new primary
        assert lean.topology is not None
        await lean.refresh()
        assert lean.topology.owners()[slot].port == target.port
    finally:
        await lean.close()
        client.close()
    assert after == [b"before the move"] * 3 and asked() == [0]


async def test_an_ask_is_followed_with_asking_and_changes_nothing(cluster) -> None:
    source, target = cluster.primaries()[:2]
    moved_key = key_on(cluster, source.port, "ask")
    slot = key_slot(moved_key)
    stayed = moved_key + ":stays"  # the same hash tag: the same slot
    client = client_for(cluster)
    client.set(moved_key, b"migrated", px=60_000)
    client.set(stayed, b"not yet")
    lean = lean_for(cluster)
    asked, moved = Delta(redirects("ask")), Delta(redirects("moved"))
    try:
        await lean.refresh()
        cluster.begin_migration(slot, source, target)
        cluster.migrate_keys(source, target, moved_key)
        value, pttl = await lean.get_with_pttl(moved_key)
        plain = await lean.get(moved_key)
        here = await lean.get(stayed)
        with pytest.raises(ResponseError) as split:  # one key each side: Redis says TRYAGAIN
            await lean.mget(moved_key, stayed)
        owner = lean.topology.owners()[slot] if lean.topology else None
        cluster.migrate_keys(source, target, stayed)
        cluster.end_migration(slot, target)
    finally:
        await lean.close()
        client.close()
    assert (value, plain, here) == (b"migrated", b"migrated", b"not yet") and 59_000 < pttl <= 60_000
    assert asked() == [2] and moved() == [0]
    assert owner is not None and owner.port == source.port  # an ASK leaves the map alone
    assert "TRYAGAIN" in str(split.value)


async def test_a_failover_fails_calls_fast_then_reads_the_new_primary(cluster) -> None:
    primary = cluster.primaries()[2]
    key = key_on(cluster, primary.port, "failover")
    client = client_for(cluster)
    client.set(key, b"kept by the replica")
    (replica,) = cluster.replicas_of(primary)
    cluster.cli(primary, "WAIT", "1", "2000")  # the replica has the value
    lean = lean_for(cluster, REDIS_TIMEOUT_S="5")
    try:
        assert await lean.get(key) == b"kept by the replica"
        primary.kill()
        with pytest.raises(RedisConnectionError):
            await lean.get(key)
        await wait_for_async(lambda: cluster.cli(replica, "ROLE").startswith("master"), 15,
                             "the replica promoted", 0.02)

        # as behind the API's breaker: a read that finds the old map fails and has it
        # read again, and a later one reaches the new primary
        async def read() -> bytes | None:
            try:
                return await lean.get(key)
            except (RedisConnectionError, ResponseError):
                return None

        value = await wait_for_async(read, 5, "reads reaching the promoted replica", 0.05)
        assert lean.topology is not None
        owner = lean.topology.owners()[key_slot(key)]
    finally:
        await lean.close()
        client.close()
    assert value == b"kept by the replica"
    assert owner is not None and owner.port == replica.port


async def test_an_acl_without_cluster_shards_reads_the_map_from_cluster_slots(cluster) -> None:
    for node in (n for n in cluster.nodes if n.running):  # a primary was failed over above
        assert cluster.cli(node, "ACL", "SETUSER", "slotsonly", "on", ">slots-pw", "~*",
                           "+@all", "-cluster|shards").strip() == "OK"
    client = client_for(cluster)
    client.set("lean:{acl}", b"read with CLUSTER SLOTS")
    lean = lean_for(cluster, REDIS_USERNAME="slotsonly", REDIS_PASSWORD="slots-pw")
    try:
        got = await lean.get("lean:{acl}")
        covered = lean.topology is not None and lean.topology.covered
    finally:
        await lean.close()
        client.close()
    assert got == b"read with CLUSTER SLOTS" and covered
