"""The declared entities' GET routes, dispatched ahead of Starlette's own layers.

A warm ``GET /user/42`` is what cachetail sells.  On its way to the endpoint Starlette
passes it through its error middleware, the HTTP metrics middleware, its exception
middleware, and a router that tries each route's regular expression in turn: about half
of what a near-cache hit cost the API.  :class:`CachetailApp` is that Starlette
application with one shortcut: a GET whose path has the shape of a declared entity route
(its static segments equal, each parameter one non-empty segment, as Starlette's
``{param}`` matches) goes straight to the endpoint.  Its errors are answered by the same
handlers (:mod:`api.errors`) and it is counted as the middleware counts a request.
Everything else, HEAD included, takes Starlette's way unchanged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from api.db import DatabaseUnavailable
from api.entities import Answered, EntityEndpoint
from api.errors import ApiError, on_api_error, on_database_unavailable, on_unexpected
from api.metrics_endpoint import count_request
from api.services import Services

log = logging.getLogger("api")


class _Shape:
    """One entity route: its segments, ``None`` where a parameter stands."""

    __slots__ = ("template", "segments", "params", "endpoint", "fixed")

    def __init__(self, template: str, segments: tuple[str | None, ...], params: tuple[tuple[int, str], ...],
                 endpoint: EntityEndpoint) -> None:
        self.template = template
        self.segments = segments
        self.params = params  # (segment index, parameter name)
        self.endpoint = endpoint
        # the static segments after the first (the first is the index's key)
        self.fixed = tuple((i, s) for i, s in enumerate(segments) if s is not None and i > 0)

    def match(self, parts: list[str]) -> dict[str, str] | None:
        """The path parameters when ``parts`` (as many as the segments) fit this route."""
        for i, s in self.fixed:
            if parts[i] != s:
                return None
        params = {}
        for i, name in self.params:
            if not parts[i]:
                return None
            params[name] = parts[i]
        return params


def shape(template: str, endpoint: EntityEndpoint) -> _Shape | None:
    """The route's shape; None when it is not plain ``/static/{param}/...`` (left to Starlette)."""
    if not template.startswith("/"):
        return None
    segments: list[str | None] = []
    params = []
    for i, part in enumerate(template[1:].split("/")):
        if part.startswith("{") and part.endswith("}") and part[1:-1].isidentifier():
            segments.append(None)
            params.append((i, part[1:-1]))
        elif part and not any(c in part for c in "{}:"):
            segments.append(part)
        else:
            return None
    return _Shape(template, tuple(segments), tuple(params), endpoint)


class CachetailApp(Starlette):
    """Starlette, with the declared entity routes answered without its router (see above)."""

    fast: dict[tuple[int, str | None], tuple[_Shape, ...]] = {}
    services: Services  # set by the lifespan, with app.state.services

    def dispatch_entities(self, routes: Sequence[tuple[str, EntityEndpoint]]) -> None:
        """Index the entity routes by segment count and first segment."""
        table: dict[tuple[int, str | None], list[_Shape]] = {}
        for template, endpoint in routes:
            found = shape(template, endpoint)
            if found is not None:
                table.setdefault((len(found.segments), found.segments[0]), []).append(found)
        self.fast = {key: tuple(shapes) for key, shapes in table.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path"):
            parts = scope["path"][1:].split("/")
            for candidate in self.fast.get((len(parts), parts[0]), ()) or self.fast.get((len(parts), None), ()):
                params = candidate.match(parts)
                if params is not None:
                    scope["app"] = self
                    scope["path_params"] = params
                    await self._answer(candidate, scope, receive, send)
                    return
        await super().__call__(scope, receive, send)

    async def _answer(self, candidate: _Shape, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500
        try:
            try:
                answered: Answered = await candidate.endpoint.answer(scope)
            except ApiError as exc:
                answered = Answered.of(await on_api_error(Request(scope, receive), exc))
            except DatabaseUnavailable as exc:
                answered = Answered.of(await on_database_unavailable(Request(scope, receive), exc))
            except Exception as exc:  # noqa: BLE001 - answered as Starlette's handler answers it, and logged
                answered = Answered.of(await on_unexpected(Request(scope, receive), exc))
            status = answered.status
            await send({"type": "http.response.start", "status": status, "headers": answered.headers})
            await send({"type": "http.response.body", "body": answered.body})
        finally:
            count_request(candidate.template, "GET", status, time.perf_counter() - started)
