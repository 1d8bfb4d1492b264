"""Redis losing acknowledged writes does not bring a deleted row back.

Redis replicates asynchronously.  The cluster test forces the loss: the replica
is paused and cut off, the invalidator deletes a stale value on the primary,
the primary is killed, the replica resumes and is promoted still holding the
stale value.  The invalidator must notice the new primary and replay the
binlog window the replica missed.  The single-node test restarts a server
from a snapshot older than the invalidator's last delete.
"""

from __future__ import annotations

import itertools
import os
import signal

import redis

from cachetail.devstack import RedisCluster, RedisServer
from support.stack import Stack
from support.waiting import wait_for

STALE = b'{"stale":true}'


def node_client(node: RedisServer) -> redis.Redis:
    return redis.Redis(host=node.host, port=node.port, socket_timeout=2)


def role(node: RedisServer) -> str | None:
    try:
        return str(node_client(node).info("replication")["role"])
    except redis.RedisError:
        return None


def acknowledged(primary: redis.Redis) -> int:
    """The lowest replication offset the online replicas acknowledged to ``primary``."""
    info = primary.info("replication")
    replicas = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
    return min((int(r["offset"]) for r in replicas if r.get("state") == "online"), default=-1)


def info_calls(node: redis.Redis) -> int:
    return int(node.info("commandstats").get("cmdstat_info", {}).get("calls", 0))


def test_a_delete_lost_in_a_failover_is_replayed(single_stack: Stack, cluster_factory, db,
                                                 workers) -> None:
    cluster: RedisCluster = cluster_factory()
    stack = Stack(single_stack.mariadb, cluster)
    worker = workers(stack.invalidator_env())
    key = worker.keyspace.user(77)
    primary = cluster.primary_for(key)
    (replica,) = cluster.replicas_of(primary)
    on_primary = node_client(primary)
    on_primary.set(key, STALE)
    assert on_primary.execute_command("WAIT", 1, 2000) == 1  # the replica has the stale value
    # Replicas acknowledge once a second; the watch must see the primary in sync (topology.py).
    offset = int(on_primary.info("replication")["master_repl_offset"])
    wait_for(lambda: acknowledged(on_primary) >= offset, 10, "the replica acknowledging the stale value")
    mine = itertools.count(info_calls(on_primary) + 1)  # every read of the count is an INFO too
    wait_for(lambda: info_calls(on_primary) > next(mine), 5, "the failover watch reading it")

    # The replica hears nothing more: paused, and its link cut.
    os.kill(replica.proc.pid, signal.SIGSTOP)
    try:
        on_primary.execute_command("CLIENT", "KILL", "TYPE", "replica")
        with db.cursor() as cur:
            cur.execute("UPDATE users SET full_name = CONCAT('F', full_name) WHERE id = 77")
        wait_for(lambda: on_primary.exists(key) == 0, 10, "the invalidator's delete on the primary")
        primary.kill()
    finally:
        os.kill(replica.proc.pid, signal.SIGCONT)

    # The hole is real: the replica never got the delete.
    reader = node_client(replica)
    reader.execute_command("READONLY")
    assert reader.get(key) == STALE

    wait_for(lambda: role(replica) == "master", 30, "the replica promoted")
    # ... and closed: the invalidator replays the window onto the new primary.
    wait_for(lambda: node_client(replica).exists(key) == 0, 15, "the replayed delete",
             interval=0.05)
    assert worker.metric('cachetail_invalidator_replays_total{reason="failover"}') >= 1
    assert "REPLAY (failover)" in worker.log()

    # Still following: a later change is applied on the new topology.
    client = stack.redis_client()
    client.set(key, STALE)
    with db.cursor() as cur:
        cur.execute("UPDATE users SET full_name = CONCAT('G', full_name) WHERE id = 77")
    wait_for(lambda: client.exists(key) == 0, 10, "a delete after the failover")
    client.close()


def test_a_redis_restarted_from_an_older_snapshot_is_invalidated(single_stack: Stack, redis_factory,
                                                                db, workers) -> None:
    """One node, persistence on: the snapshot holds a value the invalidator deleted after it
    was taken.  A restart loads it back (with the old lease and position).  The invalidator
    sees a new server behind the address and, unable to bound what was lost (no replica was
    ever in sync), drops every cached key."""
    cache = redis_factory()
    env = {**single_stack.invalidator_env(), "REDIS_HOST": cache.host, "REDIS_PORT": str(cache.port),
           "INVALIDATOR_LEASE_S": "30"}  # the restored lease is still ours: only the watch helps
    worker = workers(env)
    client = node_client(cache)
    key = worker.keyspace.user(78)
    client.set(key, STALE)
    client.save()  # the snapshot: stale value, lease, position
    with db.cursor() as cur:
        cur.execute("UPDATE users SET full_name = CONCAT('S', full_name) WHERE id = 78")
    wait_for(lambda: client.exists(key) == 0, 10, "the invalidator's delete")
    cache.kill()
    cache.start()  # loads dump.rdb: the deleted value is back
    client = node_client(cache)
    wait_for(lambda: client.exists(key) == 0, 15, "the restored stale value dropped", interval=0.05)
    # counted once the position after the clear is saved, a round trip after the key went
    wait_for(lambda: worker.metric('cachetail_invalidator_full_invalidations_total{reason="failover_window"}') == 1,
             10, "the full invalidation counted")
    with db.cursor() as cur:  # and it goes on applying changes
        client.set(key, STALE)
        cur.execute("UPDATE users SET full_name = CONCAT('T', full_name) WHERE id = 78")
    wait_for(lambda: client.exists(key) == 0, 10, "a delete after the restart")
