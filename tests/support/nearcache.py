"""The near-cache as the tests look at it from Redis: the tracking connections on each
primary, the GETs that reached Redis, and the tier each answer came from."""

from __future__ import annotations

from typing import Any

import httpx
import redis

TRACKING = "cachetail-api-tracking"


def primaries(client: redis.Redis | redis.RedisCluster) -> list[redis.Redis]:
    """One client per primary: the node itself, or each primary of a cluster."""
    if isinstance(client, redis.RedisCluster):
        return [client.get_redis_connection(node) for node in client.get_primaries()]
    return [client]


def tracking_clients(client: redis.Redis | redis.RedisCluster,
                     key: str | None = None) -> list[dict[str, Any]]:
    """The tracking connections on every primary (or on the one holding ``key``); each
    entry's "node" is the client to kill it through."""
    nodes = primaries(client)
    if key is not None and isinstance(client, redis.RedisCluster):
        nodes = [client.get_redis_connection(client.get_node_from_key(key))]
    return [{**c, "node": node} for node in nodes for c in node.client_list()
            if c["name"] == TRACKING]


def get_calls(client: redis.Redis | redis.RedisCluster) -> int:
    return sum(node.info("commandstats").get("cmdstat_get", {}).get("calls", 0)
               for node in primaries(client))


def near(result: str) -> tuple[str, dict[str, str]]:
    return "cachetail_nearcache_lookups_total", {"result": result}


def tiers(responses: list[httpx.Response]) -> list[str | None]:
    return [r.headers.get("x-cache-tier") for r in responses]
