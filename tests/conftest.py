"""Fixtures: throwaway MariaDB (binlog ROW/FULL/FULL) and Redis on free ports.

Nothing here touches the servers on the standard ports.  The session ``stack``
is shared; tests that stop, kill or reconfigure a server take a private one
from ``mariadb_factory`` / ``redis_factory`` / ``cluster_factory``.

A test marked ``@pytest.mark.redis_kinds("single", "cluster")`` runs once on a
single Redis node and once on a Redis Cluster of 3 primaries + 3 replicas
(started once per session): ``stack`` and ``redis_client`` follow its kind.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pymysql
import pytest
import redis

from cachetail.devstack import MariaDB, RedisCluster, RedisServer, load_schema
from cachetail.tcpproxy import TcpProxy

API_PASSWORD = "api-test-pw"
INVALIDATOR_PASSWORD = "inv-test-pw"
ADMIN_TOKEN = "test-admin-token-0123456789"
_server_ids = itertools.count(100)


@dataclass
class Stack:
    mariadb: MariaDB
    redis: RedisServer | RedisCluster

    @property
    def cluster(self) -> bool:
        return isinstance(self.redis, RedisCluster)

    def base_env(self) -> dict[str, str]:
        return {
            "DB_HOST": self.mariadb.host,
            "DB_PORT": str(self.mariadb.port),
            "DB_NAME": "cachelab",
            "REDIS_HOST": self.redis.host,
            "REDIS_PORT": str(self.redis.port),
            "REDIS_CLUSTER": "1" if self.cluster else "0",
            "ADMIN_TOKEN": ADMIN_TOKEN,
            # The 0.25 s production default measures scheduling on a loaded 2-core CI
            # machine; tests of timeouts set their own.
            "REDIS_TIMEOUT_S": "2",
        }

    def redis_client(self) -> redis.Redis | redis.RedisCluster:
        if self.cluster:
            return redis.RedisCluster(host=self.redis.host, port=self.redis.port)
        return redis.Redis(host=self.redis.host, port=self.redis.port)

    def api_env(self) -> dict[str, str]:
        return {**self.base_env(), "DB_USER": "cachetail_api", "DB_PASSWORD": API_PASSWORD}

    def invalidator_env(self) -> dict[str, str]:
        return {
            **self.base_env(),
            "DB_USER": "cachetail_invalidator",
            "DB_PASSWORD": INVALIDATOR_PASSWORD,
            "INVALIDATOR_SERVER_ID": str(next(_server_ids) + 10_000),
        }


def start_mariadb(base: Path, extra_args: Sequence[str] = ()) -> MariaDB:
    server = MariaDB(base, server_id=next(_server_ids), extra_args=extra_args)
    server.start()
    load_schema(server, API_PASSWORD, INVALIDATOR_PASSWORD)
    return server


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("redis_kinds")
    kinds = marker.args if marker is not None and "stack" in metafunc.fixturenames else None
    if "nearcache" in metafunc.fixturenames:
        # near-cache on and off, on each Redis kind named
        combos = [(kind, near) for kind in (kinds or ("single",)) for near in ("1", "0")]
        ids = [f"{kind}-{'near' if near == '1' else 'nonear'}" for kind, near in combos]
        if kinds:
            metafunc.parametrize(("redis_kind", "nearcache"), combos, ids=ids, indirect=["nearcache"])
        else:
            metafunc.parametrize("nearcache", [n for _, n in combos], ids=ids, indirect=True)
    elif kinds:
        metafunc.parametrize("redis_kind", kinds)


@pytest.fixture
def redis_kind() -> str:
    return "single"


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


@pytest.fixture
def mariadb_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., MariaDB]]:
    """Private MariaDB servers (schema and accounts loaded) that a test may stop or kill."""
    started: list[MariaDB] = []

    def make(extra_args: Sequence[str] = ()) -> MariaDB:
        server = start_mariadb(tmp_path_factory.mktemp("mariadb"), extra_args)
        started.append(server)
        return server

    yield make
    for server in started:
        server.kill()


@pytest.fixture
def redis_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., RedisServer]]:
    """Private Redis servers that a test may stop, kill and start again."""
    started: list[RedisServer] = []

    def make(password: str | None = None) -> RedisServer:
        server = RedisServer(tmp_path_factory.mktemp("redis"), password=password)
        server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.kill()


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


@dataclass
class DatabasePair:
    """A primary and its GTID replica (``log_slave_updates``), behind one address: a proxy."""

    primary: MariaDB
    replica: MariaDB
    proxy: TcpProxy

    def env(self, env: dict[str, str]) -> dict[str, str]:
        """``env`` with the database address pointing at the proxy."""
        return {**env, "DB_HOST": self.proxy.host, "DB_PORT": str(self.proxy.port)}

    def failover(self, caught_up: bool = True) -> None:
        """Stop the primary, promote the replica, move the address (every open connection is
        cut).  ``caught_up``: a planned failover, the replica has every transaction first."""
        if caught_up:
            self.replica.wait_replicated(self.primary.gtid_pos())
        self.proxy.refuse()
        self.primary.stop()
        self.replica.promote()
        self.proxy.switch((self.replica.host, self.replica.port))
        self.primary, self.replica = self.replica, self.primary


@pytest.fixture
def database_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], DatabasePair]]:
    """``database_pair()`` -> a primary with the schema, a replica in sync, a proxy on the primary."""
    made: list[DatabasePair] = []

    def make() -> DatabasePair:
        args = ("--log-slave-updates",)
        primary = start_mariadb(tmp_path_factory.mktemp("primary"), args)
        replica = MariaDB(tmp_path_factory.mktemp("replica"), server_id=next(_server_ids), extra_args=args)
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
