"""The Starlette application.

``create_app(settings)`` is for tests and embedding.  The module-level ``app``
(for ``uvicorn api.app:app``) reads the environment and ``.env`` when the
server starts its lifespan, never at import; a configuration error fails the
startup with the one line naming the variable.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, Route
from starlette.types import Receive, Scope, Send

from api import admin, docs, reads
from api.cache import AfterSelect
from api.errors import HANDLERS, json_error
from api.metrics_endpoint import HttpMetrics, metrics
from api.services import Services
from api.settings import ApiSettings, SettingsError
from cachetail.settings import load_environment

log = logging.getLogger("api")


def routes() -> list[Route | Mount]:
    return [
        Route("/user/{user_id}", reads.user, methods=["GET"]),
        Route("/user/{user_id}/nocache", reads.user_nocache, methods=["GET"]),
        Route("/products", reads.products, methods=["GET"]),
        Route("/cache/stats", admin.cache_stats, methods=["GET"]),
        Route("/cache/clear", admin.cache_clear, methods=["POST"]),
        Route("/health", admin.health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", docs.openapi, methods=["GET"]),
        Route("/docs", docs.swagger_ui, methods=["GET"]),
        Route("/redoc", docs.redoc, methods=["GET"]),
        Mount(docs.STATIC_PATH, app=docs.static_files(), name="docs-static"),
    ]


def create_app(settings: ApiSettings, *, after_select: AfterSelect | None = None) -> Starlette:
    """The API for ``settings``; pools are built in its lifespan.  ``after_select`` is the
    test seam between a fill's SELECT and its store (see :mod:`api.cache`)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        svc = Services.build(settings, after_select)
        app.state.services = svc
        log.info("cachetail API: MySQL %s:%s as %s, Redis %s%s:%s%s", settings.mysql.host,
                 settings.mysql.port, settings.mysql.user,
                 "Cluster " if settings.redis.cluster else "", settings.redis.host,
                 settings.redis.port, " (TLS)" if settings.redis.tls else "")
        await svc.start()
        try:
            yield
        finally:
            await svc.close()

    return Starlette(
        routes=routes(),
        middleware=[Middleware(HttpMetrics)],
        exception_handlers=HANDLERS,
        lifespan=lifespan,
    )


class _FromEnvironment:
    """ASGI app that builds the real one from the environment at lifespan startup."""

    def __init__(self) -> None:
        self._app: Starlette | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" and self._app is None:
            try:
                settings = ApiSettings.from_env(load_environment())
            except SettingsError as exc:
                await receive()  # lifespan.startup
                await send({"type": "lifespan.startup.failed", "message": f"configuration: {exc}"})
                return
            self._app = create_app(settings)
        if self._app is None:
            if scope["type"] == "http":  # a server run without lifespan: nothing is built
                await json_error(503, "not_started", "the lifespan did not run")(scope, receive, send)
            return
        await self._app(scope, receive, send)


app = _FromEnvironment()
