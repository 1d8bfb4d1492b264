"""GET /cache/stats, POST /cache/clear and GET /health: the operator's endpoints."""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.db import DatabaseUnavailable
from api.errors import ApiError
from api.metrics_endpoint import lookup_totals, nearcache_totals
from api.redisconn import RedisUnavailable
from api.services import Services, services

# Counting our keys walks the keyspace (SCAN), so it is capped: past either
# limit /cache/stats reports a lower bound ("keys_complete": false).
_COUNT_MAX_CALLS = 200
_COUNT_MAX_S = 0.5
_SCAN_COUNT = 1000


def _not_cache_entries(svc: Services) -> set[bytes]:
    """Keys under our prefix that are state, not cached data: clearing them would do harm.
    Deleting the products generation would restart it at 0, and a list stamped
    with a number it climbs back to would be served as fresh; the invalidator's
    position is what makes its restart exact."""
    keys = svc.keys
    return {keys.products_generation().encode(), keys.invalidator_position().encode()}


async def cache_stats(request: Request) -> Response:
    totals = lookup_totals()
    lookups = sum(totals.values())
    body: dict[str, Any] = {
        "hits": int(totals["hit"]),
        "misses": int(totals["miss"]),
        "bypasses": int(totals["bypass"]),
        "hit_rate": round(totals["hit"] / lookups, 4) if lookups else 0.0,
    }
    svc = services(request)
    body["nearcache"] = {"enabled": svc.near is not None, **nearcache_totals()}
    try:
        body["redis"] = await _redis_stats(svc)
    except RedisUnavailable as exc:
        body["redis"] = {"state": "unavailable", "error": exc.error_class}
    return JSONResponse(body)


async def _redis_stats(svc: Services) -> dict[str, Any]:
    info = await svc.guard.run("info", lambda: svc.redis.info("default"), probe=True)
    count, complete = 0, True
    cursor, calls, deadline = 0, 0, time.monotonic() + _COUNT_MAX_S
    pattern, kept = svc.keys.owned_pattern(), _not_cache_entries(svc)
    while True:
        cursor, found = await svc.guard.run(
            "scan", lambda: svc.redis.scan(cursor, match=pattern, count=_SCAN_COUNT), probe=True)
        count, calls = count + sum(1 for key in found if key not in kept), calls + 1
        if cursor == 0:
            break
        if calls >= _COUNT_MAX_CALLS or time.monotonic() > deadline:
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
    cursor = 0
    pattern, kept = svc.keys.owned_pattern(), _not_cache_entries(svc)
    try:
        while True:
            cursor, found = await svc.guard.run(
                "scan", lambda: svc.redis.scan(cursor, match=pattern, count=_SCAN_COUNT),
                probe=True)
            found = [key for key in found if key not in kept]
            if found:
                removed += await svc.guard.run("unlink", lambda: svc.redis.unlink(*found))
            if cursor == 0:
                break
    except RedisUnavailable as exc:
        raise ApiError(503, "redis_unavailable",
                       f"Redis failed ({exc.error_class}) after {removed} keys were removed",
                       {"Retry-After": "1"}) from None
    if svc.tracker is not None:  # this worker's near-cache has dropped them when we answer
        await svc.tracker.sync()
    return JSONResponse({"removed": removed})


async def health(request: Request) -> Response:
    svc = services(request)
    mysql, redis = await asyncio.gather(_mysql_state(svc), _redis_state(svc))
    if mysql["state"] != "ok":
        status, code = "down", 503
    else:
        status, code = ("ok", 200) if redis["state"] == "ok" else ("degraded", 200)
    return JSONResponse({"status": status, "mysql": mysql, "redis": redis}, status_code=code)


async def _mysql_state(svc: Services) -> dict[str, str]:
    try:
        await svc.db.ping(svc.settings.health_timeout_s)
    except DatabaseUnavailable as exc:
        return {"state": "down", "error": exc.error_class}
    return {"state": "ok"}


async def _redis_state(svc: Services) -> dict[str, str]:
    try:
        await svc.guard.run("ping", svc.redis.ping, probe=True)
    except RedisUnavailable as exc:
        return {"state": "down", "error": exc.error_class}
    return {"state": "ok"}
