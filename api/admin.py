"""GET /cache/stats, POST /cache/clear and GET /health: the operator's endpoints."""

from __future__ import annotations

import asyncio
import functools
import hmac
import time
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import RedisCluster
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.db import DatabaseUnavailable
from api.errors import ApiError
from api.metrics_endpoint import lookup_totals, lookups_by_entity, nearcache_totals
from api.redisconn import RedisUnavailable
from api.services import Services, services

# Counting our keys walks the keyspace (SCAN), so it is capped: past either
# limit /cache/stats reports a lower bound ("keys_complete": false).
_COUNT_MAX_KEYS = 200_000
_COUNT_MAX_S = 0.5
_SCAN_COUNT = 1000


async def _owned_keys(svc: Services) -> AsyncIterator[list[bytes]]:
    """Our cached entries in batches, across every primary on a cluster (SCAN, never KEYS).

    State under the prefix is skipped: deleting the products generation would
    restart it, and the invalidator's position and lease make its restart exact.
    """
    found = svc.redis.scan_iter(match=svc.keys.owned_pattern(), count=_SCAN_COUNT)
    batch: list[bytes] = []
    while True:
        try:
            key = await svc.guard.run("scan", found.__anext__, probe=True)
        except StopAsyncIteration:
            break
        if not svc.keys.is_state(key):
            batch.append(key)
        if len(batch) >= _SCAN_COUNT:
            yield batch
            batch = []
    if batch:
        yield batch


def _figures(totals: dict[str, float]) -> dict[str, Any]:
    lookups = sum(totals.values())
    return {"hits": int(totals["hit"]), "misses": int(totals["miss"]), "bypasses": int(totals["bypass"]),
            "hit_rate": round(totals["hit"] / lookups, 4) if lookups else 0.0}


async def cache_stats(request: Request) -> Response:
    body: dict[str, Any] = _figures(lookup_totals())
    svc = services(request)
    counted = lookups_by_entity()
    zero = {"hit": 0.0, "miss": 0.0, "bypass": 0.0}
    body["entities"] = {e.name: _figures(counted.get(e.name, zero)) for e in svc.config.entities}
    body["lists"] = {x.name: _figures(counted.get(x.name, zero)) for x in svc.config.lists}
    body["nearcache"] = {"enabled": svc.near is not None, **nearcache_totals()}
    try:
        body["redis"] = await _redis_stats(svc)
    except RedisUnavailable as exc:
        body["redis"] = {"state": "unavailable", "error": exc.error_class}
    return JSONResponse(body)


async def _redis_stats(svc: Services) -> dict[str, Any]:
    if isinstance(svc.redis, RedisCluster):
        per_node = await svc.guard.run("info", lambda: svc.redis.info(
            "default", target_nodes=RedisCluster.PRIMARIES), probe=True)
        info = {name: sum(node.get(name, 0) for node in per_node.values())
                for name in ("keyspace_hits", "keyspace_misses", "used_memory")}
    else:
        info = await svc.guard.run("info", lambda: svc.redis.info("default"), probe=True)
    count, complete, deadline = 0, True, time.monotonic() + _COUNT_MAX_S
    async for batch in _owned_keys(svc):
        count += len(batch)
        if count >= _COUNT_MAX_KEYS or time.monotonic() > deadline:
            complete = False
            break
    return {
        "state": "ok",
        "keyspace_hits": info.get("keyspace_hits"),
        "keyspace_misses": info.get("keyspace_misses"),
        "used_memory": info.get("used_memory"),
        "keys": count,
        "keys_complete": complete,
    }


def _authorize(request: Request) -> None:
    token = services(request).settings.admin_token
    if not token:
        raise ApiError(403, "disabled", "cache clearing is disabled: ADMIN_TOKEN is not set")
    header = request.headers.get("authorization")
    if header is None:
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <ADMIN_TOKEN>",
                       {"WWW-Authenticate": 'Bearer realm="cachetail"'})
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.reveal().encode()):
        raise ApiError(403, "forbidden", "wrong token")


async def cache_clear(request: Request) -> Response:
    _authorize(request)
    svc = services(request)
    removed = 0
    try:
        async for batch in _owned_keys(svc):  # UNLINK is split by slot on a cluster
            removed += await svc.guard.run("unlink", functools.partial(svc.redis.unlink, *batch))
    except RedisUnavailable as exc:
        raise ApiError(503, "redis_unavailable",
                       f"Redis failed ({exc.error_class}) after {removed} keys were removed",
                       {"Retry-After": "1"}) from None
    if svc.tracker is not None:  # this worker's near-cache has dropped them when we answer
        await svc.tracker.sync()
    return JSONResponse({"removed": removed})


async def health(request: Request) -> Response:
    """200 ok; 200 degraded (Redis or the read replica down: reads are still answered, from
    MySQL or from the primary); 503 when the primary is down."""
    svc = services(request)
    mysql, redis, reads = await asyncio.gather(_mysql_state(svc), _redis_state(svc),
                                               _mysql_state(svc, reads=True))
    body: dict[str, Any] = {"mysql": mysql, "redis": redis}
    if svc.db.separate:
        server = svc.db.server
        body["mysql_read"] = {**reads, "role": server.kind if server else "unknown"}
    if mysql["state"] != "ok":
        status, code = "down", 503
    elif redis["state"] != "ok" or (svc.db.separate and reads["state"] != "ok"):
        status, code = "degraded", 200
    else:
        status, code = "ok", 200
    return JSONResponse({"status": status, **body}, status_code=code)


async def _mysql_state(svc: Services, reads: bool = False) -> dict[str, str]:
    if reads and not svc.db.separate:
        return {"state": "ok"}
    try:
        await svc.db.ping(svc.settings.health_timeout_s, reads=reads)
    except DatabaseUnavailable as exc:
        return {"state": "down", "error": exc.error_class}
    return {"state": "ok"}


async def _redis_state(svc: Services) -> dict[str, str]:
    try:
        await svc.guard.run("ping", svc.redis.ping, probe=True)
    except RedisUnavailable as exc:
        return {"state": "down", "error": exc.error_class}
    return {"state": "ok"}
