"""The servers the tests run on: a MariaDB with the lab schema and a Redis (a node or a
cluster), their accounts, and the environments the API and the invalidator get."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import redis

from cachetail.devstack import MariaDB, RedisCluster, RedisServer, load_schema
from cachetail.tcpproxy import TcpProxy

API_PASSWORD = "api-test-pw"
INVALIDATOR_PASSWORD = "inv-test-pw"
ADMIN_TOKEN = "test-admin-token-0123456789"
_server_ids = itertools.count(100)


def next_server_id() -> int:
    """A server id no other server or replication client of this session has."""
    return next(_server_ids)


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
            "INVALIDATOR_SERVER_ID": str(next_server_id() + 10_000),
        }


def start_mariadb(base: Path, extra_args: Sequence[str] = ()) -> MariaDB:
    server = MariaDB(base, server_id=next_server_id(), extra_args=extra_args)
    server.start()
    load_schema(server, API_PASSWORD, INVALIDATOR_PASSWORD)
    return server


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
