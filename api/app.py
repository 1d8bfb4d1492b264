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

from api import admin, docs
from api.fills import AfterSelect
from api.dispatch import CachetailApp
from api.entities import EntityEndpoint, EntityNocache
from api.lists import ListEndpoint
from api.errors import HANDLERS, json_error
from api.metrics_endpoint import HttpMetrics, metrics
from api.services import Services, log_config_error
from api.settings import ApiSettings, SettingsError
from cachetail.config import Config, ConfigError
from cachetail.config import load as load_config
from cachetail.settings import load_environment

log = logging.getLogger("api")


def declared_routes(config: Config) -> list[Route]:
    """One route per declared entity (and its nocache route) and list."""
    out = []
    for spec in config.entities:
        endpoint = EntityEndpoint(spec)
        out.append(Route(spec.route, endpoint, methods=["GET"], name=spec.name))  # HEAD, and the fallback
        if spec.nocache_route:
            out.append(Route(spec.nocache_route, EntityNocache(endpoint).handle, methods=["GET"],
                             name=f"{spec.name}-nocache"))
    out += [Route(x.route, ListEndpoint(x).handle, methods=["GET"], name=x.name) for x in config.lists]
    return out


def routes(config: Config) -> list[Route | Mount]:
    return [
        *declared_routes(config),
        Route("/cache/stats", admin.cache_stats, methods=["GET"]),
        Route("/cache/clear", admin.cache_clear, methods=["POST"]),
        Route("/health", admin.health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", docs.openapi, methods=["GET"]),
        Route("/docs", docs.swagger_ui, methods=["GET"]),
        Route("/redoc", docs.redoc, methods=["GET"]),
        Mount(docs.STATIC_PATH, app=docs.static_files(), name="docs-static"),
    ]


def create_app(settings: ApiSettings, *, config: Config | None = None,
               after_select: AfterSelect | None = None) -> Starlette:
    """The API for ``settings`` and the declaration (default: ``settings.config_path``);
    pools are built in its lifespan.  ``after_select`` is the test seam between a fill's
    SELECT and its store (see :mod:`api.fills`).  Raises ConfigError for a bad declaration."""
    declared = config if config is not None else load_config(settings.config_path)

    @contextlib.asynccontextmanager
    async def lifespan(app: CachetailApp) -> AsyncIterator[None]:
        svc = Services.build(settings, declared, after_select)
        app.state.services = app.services = svc  # the attribute for the hot path (api/dispatch.py)
        log.info("cachetail API: MySQL %s:%s as %s, Redis %s%s:%s%s", settings.mysql.host,
                 settings.mysql.port, settings.mysql.user,
                 "Cluster " if settings.redis.cluster else "", settings.redis.host,
                 settings.redis.port, " (TLS)" if settings.redis.tls else "")
        try:
            await svc.start()
        except ConfigError as exc:
            log_config_error(exc)
            await svc.close()
            raise
        try:
            yield
        finally:
            await svc.close()

    app = CachetailApp(
        routes=routes(declared),
        middleware=[Middleware(HttpMetrics)],
        exception_handlers=HANDLERS,
        lifespan=lifespan,
    )
    app.dispatch_entities([(r.path, r.endpoint) for r in app.routes  # the hot GETs: api/dispatch.py
                           if isinstance(r, Route) and isinstance(r.endpoint, EntityEndpoint)])
    return app


class _FromEnvironment:
    """ASGI app that builds the real one from the environment at lifespan startup."""

    def __init__(self) -> None:
        self._app: Starlette | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" and self._app is None:
            try:
                settings = ApiSettings.from_env(load_environment())
                self._app = create_app(settings)
            except SettingsError as exc:
                await receive()  # lifespan.startup
                await send({"type": "lifespan.startup.failed", "message": f"configuration: {exc}"})
                return
            except ConfigError as exc:
                await receive()
                await send({"type": "lifespan.startup.failed",
                            "message": "\n".join(f"{exc.source}: {line}" for line in exc.errors)})
                return
        if self._app is None:
            if scope["type"] == "http":  # a server run without lifespan: nothing is built
                await json_error(503, "not_started", "the lifespan did not run")(scope, receive, send)
            return
        await self._app(scope, receive, send)


app = _FromEnvironment()
