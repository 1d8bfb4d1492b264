"""The near-cache on Redis Cluster when the topology changes (api/clustertracking.py),
against private 3+3 clusters: a primary failover, a hot key's slot migrating to a
new primary with an update during the migration, and one primary's tracking
connection killed.  Each forces the interleaving in which a near-cache would keep
a value the cluster changed without telling it; nothing stale may be served."""

from __future__ import annotations

import asyncio

import pytest
import redis

from api.clustermap import Primary
from cachetail.devstack import RedisCluster, RedisServer
from cachetail.keyspace import Keyspace, key_slot
from support.api import Delta, running
from support.nearcache import tiers
from support.waiting import wait_for_async

pytestmark = pytest.mark.anyio
KEYS = Keyspace()
TRACKING = "cachetail-api-tracking"


def env_for(stack, cluster: RedisCluster) -> dict[str, str]:
    return {**stack.api_env(), "REDIS_HOST": cluster.host, "REDIS_PORT": str(cluster.port),
            "REDIS_CLUSTER": "1", "NEARCACHE": "1", "API_REDIS_BREAKER_S": "0.05"}


def node_at(cluster: RedisCluster, port: int) -> RedisServer:
    return next(n for n in cluster.nodes if n.port == port)


def owner(svc, key: str) -> Primary:
    found = svc.lean.topology.owners()[key_slot(key)]
    assert found is not None
    return found


def user_on(svc, port: int, start: int = 1) -> int:
    """A user id whose key the primary on ``port`` serves."""
    return next(i for i in range(start, 10_000) if owner(svc, KEYS.user(i)).port == port)


def direct(node: RedisServer) -> redis.Redis:
    return redis.Redis(host=node.host, port=node.port)


def tracked_ports(svc) -> set[int]:
    return {p.port for p in svc.tracker.tracked}


def hold_reestablishment(svc) -> tuple[asyncio.Event, asyncio.Event]:
    """Through the tracker's seam: its next attempt to establish tracking sets the first
    event and waits for the second (see :func:`release`)."""
    reached, held = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        reached.set()
        await held.wait()

    svc.tracker.before_establish = hold
    return reached, held


def release(svc, held: asyncio.Event) -> None:
    svc.tracker.before_establish = None
    held.set()


def value(user_id: int, note: str) -> bytes:
    return b'{"id":%d,"note":"%s"}' % (user_id, note.encode())


async def test_a_primary_failover(stack, cluster_factory) -> None:
    """The primary holding a near-cached user dies; its replica is promoted and the key
    changes there, first while tracking is being re-established, then once it is.  A
    near-cache that stayed live through the loss would serve the old value; one enabled
    again without tracking the promoted replica would keep what it reads there."""
    cluster = cluster_factory()
    lost = Delta(("cachetail_nearcache_resets_total", {"reason": "disconnected"}))
    async with running(env_for(stack, cluster)) as (app, api):
        svc = app.state.services
        primary = svc.lean.topology.primaries[0]
        user_id = user_on(svc, primary.port)
        key, path = KEYS.user(user_id), f"/user/{user_id}"
        warm = [await api.get(path) for _ in range(3)]
        assert tiers(warm) == [None, "redis", "near"] and key in svc.near
        old_primary = node_at(cluster, primary.port)
        (replica,) = cluster.replicas_of(old_primary)
        cluster.cli(old_primary, "WAIT", "1", "2000")  # the replica has the value

        reached, held = hold_reestablishment(svc)
        old_primary.kill()
        await asyncio.wait_for(reached.wait(), 5)  # the loss seen; tracking held back
        await wait_for_async(lambda: cluster.cli(replica, "ROLE").startswith("master"), 20,
                         "the replica promoted")
        promoted = direct(replica)
        promoted.set(key, value(user_id, "changed on the promoted replica"))  # told to no one
        release(svc, held)

        await wait_for_async(lambda: svc.near.live and replica.port in tracked_ports(svc), 20,
                         "tracking on every primary again")
        assert replica.port in tracked_ports(svc) and old_primary.port not in tracked_ports(svc)
        after = [await api.get(path) for _ in range(2)]
        promoted.set(key, value(user_id, "changed again"))
        await svc.tracker.sync()
        again = [await api.get(path) for _ in range(2)]
        promoted.close()
    assert [r.content for r in after] == [value(user_id, "changed on the promoted replica")] * 2
    assert tiers(after) == ["redis", "near"]
    assert lost() == [1]
    assert [r.content for r in again] == [value(user_id, "changed again")] * 2
    assert tiers(again) == ["redis", "near"]


async def test_a_hot_keys_slot_migrating_to_a_new_primary(stack, cluster_factory) -> None:
    """A primary joins after the near-cache was established (so it is not tracked), and
    the slot of a hot user migrates to it: MIGRATING/IMPORTING, MIGRATE, reads that
    follow ASK, an update during the migration (ASKING + SET on the new primary), then
    the slot handed over.  A reply read there through ASK, kept, would be served after
    that unannounced update."""
    cluster = cluster_factory()
    topology_resets = Delta(("cachetail_nearcache_resets_total", {"reason": "topology"}))
    async with running(env_for(stack, cluster)) as (app, api):
        svc = app.state.services
        svc.tracker.check_every = 10**9  # the periodic check must not notice the new node first
        source = node_at(cluster, svc.lean.topology.primaries[0].port)
        user_id = user_on(svc, source.port)
        key, path, slot = KEYS.user(user_id), f"/user/{user_id}", key_slot(KEYS.user(user_id))
        warm = [await api.get(path) for _ in range(3)]
        assert tiers(warm) == [None, "redis", "near"]
        original = warm[0].content

        target = cluster.add_primary()
        assert target.port not in tracked_ports(svc)
        cluster.begin_migration(slot, source, target)
        cluster.migrate_keys(source, target, key)
        await svc.tracker.sync()
        assert key not in svc.near  # MIGRATE deleted it on the source, which said so

        during = await api.get(path)  # the source answers ASK: read on the new primary
        updater = direct(target)
        with updater.pipeline(transaction=False) as pipe:
            pipe.execute_command("ASKING")
            pipe.set(key, value(user_id, "changed during the migration"))
            pipe.execute()
        after_update = [await api.get(path) for _ in range(2)]
        assert [r.content for r in after_update] == [value(user_id, "changed during the migration")] * 2

        cluster.migrate_keys(source, target, key)  # nothing left: NOKEY
        cluster.end_migration(slot, target)
        await api.get(path)  # the source answers MOVED now, unless the map was read since
        await wait_for_async(lambda: svc.near.live and target.port in tracked_ports(svc), 20,
                         "tracking the new primary")
        settled = [await api.get(path) for _ in range(3)]
        updater.set(key, value(user_id, "changed after the migration"))
        await svc.tracker.sync()
        last = await api.get(path)
        updater.close()
    assert during.content == original and during.headers["x-cache-tier"] == "redis"
    assert [r.content for r in settled] == [value(user_id, "changed during the migration")] * 3
    assert "near" in tiers(settled)
    assert last.content == value(user_id, "changed after the migration")
    assert topology_resets()[0] >= 1


async def test_one_primarys_tracking_connection_killed(stack, cluster_factory) -> None:
    """CLIENT KILL of the tracking connection on the primary of one near-cached user,
    and that user changed there before tracking is back (the re-establishment is held
    at a seam meanwhile).  Kept through the loss, the old value would be served."""
    cluster = cluster_factory()
    lost = Delta(("cachetail_nearcache_resets_total", {"reason": "disconnected"}))
    async with running(env_for(stack, cluster)) as (app, api):
        svc = app.state.services
        killed_on, other = svc.lean.topology.primaries[:2]
        hit_id, spared_id = user_on(svc, killed_on.port), user_on(svc, other.port)
        for user_id in (hit_id, spared_id):
            warm = [await api.get(f"/user/{user_id}") for _ in range(3)]
            assert tiers(warm) == [None, "redis", "near"]
        assert svc.near.entries == 2
        reached, held = hold_reestablishment(svc)
        node = direct(node_at(cluster, killed_on.port))
        (conn,) = [c for c in node.client_list() if c["name"] == TRACKING]
        node.client_kill_filter(_id=conn["id"])
        await asyncio.wait_for(reached.wait(), 5)  # the loss seen; tracking held back
        node.set(KEYS.user(hit_id), value(hit_id, "changed while untracked"))  # told to no one
        release(svc, held)
        await wait_for_async(lambda: svc.near.live and killed_on.port in tracked_ports(svc), 5,
                         "tracking back")
        (back,) = [c for c in node.client_list() if c["name"] == TRACKING]
        after = [await api.get(f"/user/{hit_id}") for _ in range(2)]
        spared = await api.get(f"/user/{spared_id}")
        node.close()
    assert [r.content for r in after] == [value(hit_id, "changed while untracked")] * 2
    assert tiers(after) == ["redis", "near"]
    assert spared.headers["x-cache-tier"] == "redis"  # the whole near-cache was emptied
    assert back["id"] != conn["id"] and lost() == [1]
