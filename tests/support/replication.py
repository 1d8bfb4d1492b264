"""A MariaDB primary and its GTID replica for the API's replica reads: the ``replicated``
(one per module) and ``pair`` (in sync around each test) fixtures, writes on the primary
and the invalidator's applied state."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from cachetail import gtid
from cachetail.devstack import MariaDB
from support.invalidator import WorkerProcess
from support.stack import Stack, next_server_id, start_mariadb
from support.waiting import wait_for, wait_for_async


@dataclass
class Replicated:
    primary: MariaDB
    replica: MariaDB

    def api_env(self, stack: Stack, prefix: str, **extra: str) -> dict[str, str]:
        return {**stack.api_env(), "DB_HOST": self.primary.host, "DB_PORT": str(self.primary.port),
                "DB_READ_HOST": self.replica.host, "DB_READ_PORT": str(self.replica.port),
                "CACHE_KEY_PREFIX": prefix, **extra}

    def invalidator_env(self, stack: Stack) -> dict[str, str]:
        return {**stack.invalidator_env(), "DB_HOST": self.primary.host, "DB_PORT": str(self.primary.port)}

    def stop_applying(self) -> None:
        self.replica.query("STOP SLAVE SQL_THREAD")

    def start_applying(self) -> None:
        self.replica.query("START SLAVE SQL_THREAD")

    @contextlib.contextmanager
    def behind(self) -> Iterator[None]:
        """The replica receives but applies nothing inside the block (its SQL thread stopped)."""
        self.stop_applying()
        try:
            yield
        finally:
            self.start_applying()

    def caught_up(self) -> None:
        self.replica.wait_replicated(self.primary.gtid_pos())

    def waits_in_progress(self) -> int:
        return int(self.replica.query(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE '%%MASTER_GTID_WAIT(%%'"
            " AND INFO NOT LIKE '%%PROCESSLIST%%'")[0][0])


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicated]:
    primary = start_mariadb(tmp_path_factory.mktemp("primary"))
    replica = MariaDB(tmp_path_factory.mktemp("replica"), server_id=next_server_id())
    try:
        replica.start()
        replica.replicate_from(primary)
        replica.wait_replicated(primary.gtid_pos())
        yield Replicated(primary, replica)
    finally:
        replica.kill()
        primary.kill()


@pytest.fixture
def pair(replicated: Replicated) -> Iterator[Replicated]:
    """The module's pair, applying and in sync before and after each test."""
    replicated.start_applying()
    replicated.caught_up()
    yield replicated
    replicated.replica.query("STOP SLAVE")
    replicated.replica.query("CHANGE MASTER TO MASTER_DELAY = 0")
    replicated.replica.query("START SLAVE")
    replicated.caught_up()


_runs = itertools.count()


def tag(word: str) -> str:
    """A name no earlier test gave (an UPDATE to the same value changes nothing)."""
    return f"{word}-{next(_runs)}"


def update(server: MariaDB, ids: list[int], name: str) -> str:
    """Give each user the full name ``<name> <id>``; the GTID of the last transaction."""
    conn = server.connect(database="cachelab")
    try:
        with conn.cursor() as cur:
            for i in ids:
                cur.execute("UPDATE users SET full_name = %s WHERE id = %s", (f"{name} {i}", i))
            cur.execute("SELECT @@last_gtid")
            return str(cur.fetchone()[0])
    finally:
        conn.close()


def applied(redis_client: Any, w: WorkerProcess) -> str:
    raw = redis_client.get(w.keyspace.invalidator_applied())
    return "" if raw is None else raw.decode()


def wait_applied(redis_client: Any, w: WorkerProcess, state: str) -> None:
    wait_for(lambda: reached(redis_client, w, state), 15, f"the invalidator's applied state to reach {state}")


async def wait_applied_async(redis_client: Any, w: WorkerProcess, state: str) -> None:
    await wait_for_async(lambda: asyncio.to_thread(reached, redis_client, w, state), 15,
                         f"the invalidator's applied state to reach {state}")


def reached(redis_client: Any, w: WorkerProcess, state: str) -> bool:
    return gtid.covers(gtid.MARIADB, applied(redis_client, w) or "0-0-0", state)


def metric(name: str, **labels: str) -> tuple[str, dict[str, str]]:
    return f"cachetail_{name}", labels
