"""GET <route>/{key...} for every declared entity, and its optional nocache route.

A plain ASGI endpoint, as the hottest route deserves: no Request or Response object and
no per-route exception wrapper on a near-cache hit.  Starlette routes to it as to any
endpoint that is not a function; an error it raises reaches the app's exception handlers.

The collation rule: the row is cached only under the key text the row itself spells.  A
request spelled otherwise (``/customers/abc`` for the row ``ABC`` under a
case-insensitive collation, ``ABC%20`` under PAD SPACE) is answered from MySQL and never
stored, since the invalidator will only ever name the row's own spelling; its answer
carries a ``Content-Location`` with the row's own URL.  A 404 is cached only where no
other spelling could later find a row (``Entity.negatives``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from api.db import Source
from api.errors import json_error
from api.freshness import min_gtid
from api.reads import JSON, check_query, headers, parse, raw_headers
from api.services import Services
from cachetail.codec import BadKey
from cachetail.config import EntitySpec
from cachetail.schema import Entity


def _key_text(entity: Entity) -> Callable[[tuple[Any, ...]], str]:
    """The fastest exact spelling of a parsed key: one integer is its decimal text."""
    if len(entity.keys.columns) == 1 and entity.keys.columns[0].integer_bits:
        return lambda values: str(values[0])
    return entity.keys.text_from_params


class Answered(NamedTuple):
    """An answer to send: the status, its raw headers and the body."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    @classmethod
    def of(cls, response: Response) -> Answered:
        """What ``response`` would send (its body rendered, its raw headers as they are)."""
        return cls(response.status_code, list(response.raw_headers), bytes(response.body))


class EntityEndpoint:
    def __init__(self, spec: EntitySpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.params = spec.key
        self.subject = f"a {spec.name} "
        self._text: Callable[[tuple[Any, ...]], str] | None = None
        self._entity: Entity | None = None
        self._catalog: object = None
        self._key_prefix = ""
        self._one: tuple[Callable[[str, str], Any], str] | None = None  # one key column: its parser

    def resolved(self, svc: Services) -> Entity:
        entity = self._entity
        if entity is None or svc.catalog is not self._catalog:
            entity = self._entity = svc.entity(self.name)
            self._catalog = svc.catalog
            self._text = _key_text(entity)
            self._key_prefix = svc.keys.row(self.spec.key_tag, "")[:-1]  # the key: prefix + text + "}"
            keys = entity.keys
            self._one = (keys.parsers[0], self.params[0]) if len(keys.columns) == 1 else None
        return entity

    def values(self, entity: Entity, path: dict[str, str]) -> tuple[Any, ...]:
        """The key's typed values from the path parameters; a 400 (ApiError) for bad ones."""
        one = self._one
        if one is not None:
            try:
                return (one[0](one[1], path[one[1]]),)
            except BadKey:
                pass  # the message is made below
        return parse(entity.keys, [path[p] for p in self.params], self.subject)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """As a Starlette endpoint (HEAD, and what api/dispatch.py leaves to the router)."""
        answered = await self.answer(scope)
        await send({"type": "http.response.start", "status": answered.status, "headers": answered.headers})
        await send({"type": "http.response.body", "body": answered.body})

    async def answer(self, scope: Scope) -> Answered:
        """The answer to a GET of this route; bad input raises ApiError (a 4xx JSON answer)."""
        svc: Services = scope["app"].services
        entity = self.resolved(svc)
        path = scope["path_params"]
        values = self.values(entity, path)
        if scope["query_string"]:
            check_query(Request(scope))
        assert self._text is not None
        key = self._key_prefix + self._text(values) + "}"
        canonical: list[str] = []
        need = min_gtid(scope["headers"], svc.fresh)

        async def load(source: Source) -> tuple[bytes | None, bool]:
            row = await svc.db.entity_row(entity, values, source)
            if row is None:
                return None, entity.negatives
            if not entity.keys.canonical(values, row):
                canonical.append(self.url_of(entity, row))
                return entity.rows.from_select(row), False
            return entity.rows.from_select(row), True

        spec = self.spec
        answer = await svc.cache.entity(self.name, key, load, near=spec.nearcache, ttl_s=spec.ttl_s,
                                        negative_ttl_s=spec.negative_ttl_s if entity.negatives else 0,
                                        need=need)
        if answer.body is None:
            return Answered.of(self.not_found(path, headers(answer)))
        extra = [(b"content-location", canonical[0].encode())] if canonical else []
        return Answered(200, [*raw_headers(answer.source, answer.tier), *extra,
                              (b"content-length", b"%d" % len(answer.body))], answer.body)

    def not_found(self, path: dict[str, str], extra: dict[str, str] | None = None) -> Response:
        which = ", ".join(f"{p} {path[p][:40]}" for p in self.params)
        return json_error(404, "not_found", f"no {self.name} with {which}", extra)

    def url_of(self, entity: Entity, row: dict[str, Any]) -> str:
        """The route filled with the row's own key values (its canonical URL)."""
        parts = entity.keys.text_from_row(row).split(":")
        url = self.spec.route
        for param, part in zip(self.params, parts, strict=False):
            url = url.replace("{" + param + "}", quote(part, safe="%"), 1)
        return url


class EntityNocache:
    """The declared ``nocache_route``: the same row, always from MySQL, never stored; from the
    read replica, which first applies the request's Cachetail-Min-GTID if it has one."""

    def __init__(self, endpoint: EntityEndpoint) -> None:
        self.endpoint = endpoint

    async def handle(self, request: Request) -> Response:
        svc: Services = request.app.state.services
        entity = self.endpoint.resolved(svc)
        values = self.endpoint.values(entity, request.path_params)
        check_query(request)
        need = min_gtid(request.scope["headers"], svc.fresh)
        row = await svc.db.entity_row(entity, values, svc.fresh.unleased(need))
        if row is None:
            return self.endpoint.not_found(request.path_params)
        return Response(entity.rows.from_select(row), media_type=JSON)
