"""Fixtures: throwaway MariaDB (binlog ROW/FULL/FULL) and Redis on free ports.

Nothing here touches the servers on the standard ports.  The session ``stack``
is shared; tests that stop, kill or reconfigure a server take a private one
from ``mariadb_factory`` / ``redis_factory``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pymysql
import pytest
import redis

from cachetail.devstack import MariaDB, RedisServer, load_schema

API_PASSWORD = "api-test-pw"
INVALIDATOR_PASSWORD = "inv-test-pw"
ADMIN_TOKEN = "test-admin-token-0123456789"
_server_ids = itertools.count(100)


@dataclass
class Stack:
    mariadb: MariaDB
    redis: RedisServer

    def base_env(self) -> dict[str, str]:
        return {
            "DB_HOST": self.mariadb.host,
            "DB_PORT": str(self.mariadb.port),
            "DB_NAME": "cachelab",
            "REDIS_HOST": self.redis.host,
            "REDIS_PORT": str(self.redis.port),
            "ADMIN_TOKEN": ADMIN_TOKEN,
        }

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


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("stack")
    db = start_mariadb(base / "mariadb")
    cache = RedisServer(base / "redis")
    try:
        cache.start()
        yield Stack(db, cache)
    finally:
        cache.stop()
        db.stop()


@pytest.fixture
def db(stack: Stack) -> Iterator[pymysql.connections.Connection]:
    conn = stack.mariadb.connect(database="cachelab", init_command="SET time_zone = '+00:00'")
    yield conn
    conn.close()


@pytest.fixture
def redis_client(stack: Stack) -> Iterator[redis.Redis]:
    client = redis.Redis(host=stack.redis.host, port=stack.redis.port)
    client.flushdb()
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
