"""The baselines of the API benchmark (bench/api_vs_bare.py), both bare Starlette:

- ``/user/{id}``: one redis.asyncio GET of the same key the API would read, returning
  the stored bytes (issue 2's baseline);
- ``/const/{id}``: constant bytes the size of a user, no I/O at all: the framework's
  own ceiling (issue 7's baseline).

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


CONSTANT = (b'{"id":1,"username":"user00001","email":"user00001@example.com",'
            b'"full_name":"User Number 00001","created_at":"2024-01-01T00:00:00Z",'
            b'"updated_at":"2024-01-01T00:00:00Z"}')


async def constant(request: Request) -> Response:
    return Response(CONSTANT, media_type="application/json")


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


app = Starlette(routes=[Route("/user/{user_id:int}", user, methods=["GET"]),
                       Route("/const/{user_id:int}", constant, methods=["GET"])], lifespan=lifespan)
