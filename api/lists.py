"""GET <route>?filter=...&after=... for every declared list.

A variant is the list under one assignment of its filters; each has a generation key and
its pages in one hash slot, so a row change invalidates only the variants the row was
or is in (see invalidator/rules.py) and variants spread over a cluster's slots.  A
filter on an inexact collation names its variant by the value's collation weight
(cachetail/collation.py), so ``?category=BOOKS`` and ``?category=books`` share one.

Paging (``paging = true``) is keyset paging: ``?after=<cursor>`` continues after the row
the cursor names, in the list's order; a full page answers ``Link: <...>; rel="next"``.
The body is the JSON array either way; a paged value keeps its next cursor before it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import Response

from api.db import Source
from api.errors import ApiError
from api.freshness import min_gtid
from api.reads import JSON, check_query, headers, parse, takes
from api.services import Services
from cachetail.codec_cursor import cursor_values
from cachetail.config import ListSpec
from cachetail.keyspace import Keyspace
from cachetail.schema import NEXT, Filter, Listing


class ListEndpoint:
    def __init__(self, spec: ListSpec) -> None:
        self.spec = spec
        self.allowed = frozenset([p for p, _ in spec.filters] + (["after"] if spec.paging else []))

    async def handle(self, request: Request) -> Response:
        check_query(request, self.allowed)
        svc: Services = request.app.state.services
        listing = svc.listing(self.spec.name)
        given = await self.filters(request, svc, listing)
        texts = await self.texts(svc, given)
        after, cursor = self.cursor(request, listing)
        variant = Keyspace.variant(self.spec.key_tag, tuple((f.param, texts[f.param]) for f, _ in given))
        spec = self.spec
        need = min_gtid(request.scope["headers"], svc.fresh)

        async def load(source: Source) -> bytes:
            return listing.payload(await svc.db.list_rows(listing, given, after, source))

        answer = await svc.cache.listing(spec.name, svc.keys.list_generation(variant),
                                         svc.keys.list_page(variant, cursor), load, ttl_s=spec.ttl_s,
                                         need=need)
        assert answer.body is not None
        extra = headers(answer)
        body = answer.body
        if spec.paging:
            nxt, _, body = body.partition(NEXT)
            if nxt:
                extra["Link"] = f'<{self.next_url(request, nxt.decode())}>; rel="next"'
        return Response(body, media_type=JSON, headers=extra)

    async def filters(self, request: Request, svc: Services, listing: Listing) -> list[tuple[Filter, Any]]:
        """The given filters, in declared order, with their typed values (an ENUM's member)."""
        out = []
        for f in listing.filters:
            raw = request.query_params.getlist(f.param)
            if not raw:
                continue
            if len(raw) > 1:
                raise ApiError(400, f"invalid_{f.param}", f"give {f.param} at most once")
            (value,) = parse(f.codec, raw, "")
            out.append((f, await self.member(svc, f, value) if f.members else value))
        return out

    @staticmethod
    async def member(svc: Services, f: Filter, value: str) -> str:
        """The ENUM member ``value`` equals under the column's collation (``?status=Shipped``
        is the member ``shipped`` under a _ci collation): the variant is named by it, as the
        invalidator names it from a row.  None of them: a 400."""
        if value in f.members:
            return value
        if f.weigher is not None:
            weights = await svc.db.weights(f.weigher, [value, *f.members])
            found = [m for m in f.members if weights[m] == weights[value]]
            if found:
                return found[0]
        raise ApiError(400, f"invalid_{f.param}", f"{f.param} {takes(f.column)}")

    async def texts(self, svc: Services, given: list[tuple[Filter, Any]]) -> dict[str, str]:
        """How each given value names its variant: its exact text, or its collation weight."""
        out = {}
        for f, value in given:
            if not f.by_weight:
                out[f.param] = f.codec.text_from_params([value])
            else:
                assert f.weigher is not None
                out[f.param] = (await svc.db.weights(f.weigher, [value]))[value]
        return out

    def cursor(self, request: Request, listing: Listing) -> tuple[tuple[Any, ...] | None, str | None]:
        """The ``after`` values and their canonical text (the page's key), or None.  A cursor is
        a bound of the keyset comparison: any value of the documented form will do."""
        raw = request.query_params.getlist("after") if self.spec.paging else []
        if not raw:
            return None, None
        if len(raw) > 1 or listing.cursor is None:
            raise ApiError(400, "invalid_after", "give after at most once")
        values = cursor_values(listing.cursor.columns, raw[0])
        if values is None:
            raise ApiError(400, "invalid_after", "after is the cursor of a Link: rel=\"next\" header:"
                                                 " the order columns' values, each as in a key, joined by ':'")
        return values, listing.cursor.text_from_params(values)

    def next_url(self, request: Request, cursor: str) -> str:
        query = [(k, v) for k, v in request.query_params.multi_items() if k != "after"]
        query.append(("after", cursor))
        return self.spec.route + "?" + urlencode(query, quote_via=quote)
