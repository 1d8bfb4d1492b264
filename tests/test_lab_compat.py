"""The lab, now a declaration (cachetail.toml), answers as it did when it was code.

tests/golden/lab_api.json was recorded by tests/golden/record_lab.py from the code before
the declaration: every route, status, header and body byte of a fixed script of requests,
and the Redis keys it left.  The same script against the current code must match, except
for what changed on purpose, named here:

- list keys: every product-list variant has a generation and a hash slot of its own
  (``ct:{p}:gen`` and ``ct:{p}:v``; ``ct:{p:category=~<weight>}:...``), so a change
  invalidates only the variants its row is in and the variants spread over a cluster.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cachetail.devstack import MariaDB
from cachetail.keyspace import Keyspace
from golden.record_lab import HEADERS, REQUESTS
from support.api import running
from support.lab import products_generation, products_page
from support.stack import Stack, start_mariadb

pytestmark = pytest.mark.anyio
GOLDEN = json.loads((Path(__file__).parent / "golden" / "lab_api.json").read_text())
KEYS = Keyspace()


@pytest.fixture(scope="module")
def fresh_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDB]:
    """The sample data as init_db.sql leaves it: other tests change the session's rows."""
    server = start_mariadb(tmp_path_factory.mktemp("lab"))
    yield server
    server.kill()


def lab_env(stack: Stack, server: MariaDB) -> dict[str, str]:
    return {**stack.api_env(), "DB_HOST": server.host, "DB_PORT": str(server.port),
            "ADMIN_TOKEN": "golden-token-0123456789"}


async def test_every_answer_is_byte_for_byte_what_the_lab_answered(stack, redis_client, fresh_lab) -> None:
    env = lab_env(stack, fresh_lab)
    got = []
    async with running(env, NEARCACHE="1") as (_, client):
        for method, path, headers in REQUESTS:
            r = await client.request(method, path, headers=headers)
            got.append({"request": f"{method} {path}", "status": r.status_code,
                        "headers": {h: r.headers[h] for h in HEADERS if h in r.headers},
                        "body": r.content.decode("utf-8", errors="replace")})
    for before, now in zip(GOLDEN["answers"], got, strict=True):
        assert _same_allow(now) == _same_allow(before), before["request"]


def _same_allow(answer: dict) -> dict:
    """Starlette lists a route's methods in set order, which differs between processes."""
    allow = answer["headers"].get("allow")
    if allow is None:
        return answer
    return {**answer, "headers": {**answer["headers"], "allow": sorted(allow.split(", "))}}


async def test_user_keys_are_unchanged_and_list_keys_are_per_variant(stack, redis_client, db, fresh_lab) -> None:
    async with running(lab_env(stack, fresh_lab), NEARCACHE="1") as (_, client):
        for method, path, headers in REQUESTS:
            if method == "GET" and not path.startswith("/cache"):
                await client.request(method, path, headers=headers)
    keys = sorted(k.decode() for k in redis_client.keys("ct:*"))
    users = [k for k in GOLDEN["redis_keys"] if k.startswith("ct:{u:")]
    lists = [products_generation(KEYS, db), products_page(KEYS, db)]
    for category in ("books", "nothing-here"):
        lists += [products_generation(KEYS, db, category), products_page(KEYS, db, category)]
    assert keys == sorted(users + lists)
    assert [k for k in keys if k.startswith("ct:{u:")] == users
