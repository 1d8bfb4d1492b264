"""Fixtures: throwaway MariaDB (binlog ROW/FULL/FULL) and Redis on free ports.

Nothing here touches the servers on the standard ports.  The session ``stack``
is shared; tests that stop, kill or reconfigure a server take a private one
from ``mariadb_factory`` / ``redis_factory`` / ``cluster_factory``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import pymysql
import pytest
import redis

from cachetail.devstack import MariaDB, RedisCluster, RedisServer
from cachetail.tcpproxy import TcpProxy
from support.stack import DatabasePair, Stack, next_server_id, start_mariadb

S = TypeVar("S", MariaDB, RedisServer)


@pytest.fixture(scope="session")
def single_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("stack")
    db = start_mariadb(base / "mariadb")
    cache = RedisServer(base / "redis")
    try:
        cache.start()
        yield Stack(db, cache)
    finally:
        cache.stop()
        db.stop()


@pytest.fixture(scope="session")
def cluster_stack(single_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The session's MariaDB with a Redis Cluster in front instead of one node."""
    cluster = RedisCluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
        yield Stack(single_stack.mariadb, cluster)
    finally:
        cluster.stop()


@pytest.fixture
def stack(redis_kind: str, request: pytest.FixtureRequest) -> Stack:
    found: Stack = request.getfixturevalue(f"{redis_kind}_stack")
    return found


@pytest.fixture
def db(stack: Stack) -> Iterator[pymysql.connections.Connection]:
    conn = stack.mariadb.connect(database="cachelab", init_command="SET time_zone = '+00:00'")
    yield conn
    conn.close()


@pytest.fixture
def redis_client(stack: Stack) -> Iterator[redis.Redis | redis.RedisCluster]:
    client = stack.redis_client()
    client.flushdb()  # every primary, on a cluster
    yield client
    client.close()


def _each_killed(make: Callable[..., S]) -> Iterator[Callable[..., S]]:
    """``make``, every server it started killed at teardown."""
    started: list[S] = []

    def tracked(*args: Any, **kwargs: Any) -> S:
        started.append(server := make(*args, **kwargs))
        return server

    yield tracked
    for server in started:
        server.kill()


@pytest.fixture
def mariadb_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., MariaDB]]:
    """Private MariaDB servers (schema and accounts loaded) that a test may stop or kill."""

    def make(extra_args: Sequence[str] = ()) -> MariaDB:
        return start_mariadb(tmp_path_factory.mktemp("mariadb"), extra_args)

    yield from _each_killed(make)


@pytest.fixture
def redis_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., RedisServer]]:
    """Private Redis servers that a test may stop, kill and start again."""

    def make(password: str | None = None) -> RedisServer:
        server = RedisServer(tmp_path_factory.mktemp("redis"), password=password)
        server.start()
        return server

    yield from _each_killed(make)


@pytest.fixture
def cluster_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., RedisCluster]]:
    """Private Redis Clusters that a test may break (kill a primary, pause a replica)."""
    started: list[RedisCluster] = []

    def make() -> RedisCluster:
        cluster = RedisCluster(tmp_path_factory.mktemp("cluster"))
        started.append(cluster)
        cluster.start()
        return cluster

    yield make
    for cluster in started:
        cluster.kill()


@pytest.fixture
def database_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], DatabasePair]]:
    """``database_pair()`` -> a primary with the schema, a replica in sync, a proxy on the primary."""
    made: list[DatabasePair] = []

    def make() -> DatabasePair:
        args = ("--log-slave-updates",)
        primary = start_mariadb(tmp_path_factory.mktemp("primary"), args)
        replica = MariaDB(tmp_path_factory.mktemp("replica"), server_id=next_server_id(), extra_args=args)
        proxy = TcpProxy((primary.host, primary.port)).start()
        made.append(DatabasePair(primary, replica, proxy))
        replica.start()
        replica.replicate_from(primary)
        replica.wait_replicated(primary.gtid_pos())
        return made[-1]

    yield make
    for pair in made:
        pair.proxy.close()
        pair.primary.kill()
        pair.replica.kill()
