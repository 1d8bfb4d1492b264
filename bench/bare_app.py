"""The baseline for issue 2's benchmark: a bare Starlette endpoint doing one redis.asyncio
GET of the same key the API would read, returning the stored bytes.

Run it as the API is run: ``uvicorn bench.bare_app:app --workers 1`` with the API's
environment (REDIS_*, CACHE_KEY_PREFIX).  Same client construction as the API (a
BlockingConnectionPool with hiredis), no metrics, no lease logic, no fallback.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.redisconn import build_client
from cachetail.keyspace import Keyspace
from cachetail.settings import CacheSettings, RedisSettings, load_environment


async def user(request: Request) -> Response:
    value = await request.app.state.redis.get(request.app.state.keys.user(int(request.path_params["user_id"])))
    if value is None:
        return Response(b'{"error":"not_cached"}', 404, media_type="application/json")
    return Response(value, media_type="application/json")


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    env = load_environment()
    app.state.redis = build_client(RedisSettings.from_env(env))
    app.state.keys = Keyspace.from_cache_settings(CacheSettings.from_env(env))
    try:
        yield
    finally:
        await app.state.redis.aclose()


app = Starlette(routes=[Route("/user/{user_id:int}", user, methods=["GET"])], lifespan=lifespan)
