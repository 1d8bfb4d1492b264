"""GET /user/{id}, /user/{id}/nocache and /products: validated input, cached bodies."""

from __future__ import annotations

import functools

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from api.cache import Answer
from api.errors import ApiError, json_error
from api.services import Services, services
from cachetail.keyspace import MAX_CATEGORY_LEN, MAX_ID, serialize_products, serialize_user

JSON = "application/json"


def parse_id(raw: str) -> int:
    # ASCII digits only: str.isdigit() would accept '١٢' and int() would accept '+1', ' 1', '1_0'.
    if not (0 < len(raw) <= 10 and raw.isascii() and raw.isdigit()):
        raise ApiError(400, "invalid_id", f"a user id is an integer from 1 to {MAX_ID}")
    value = int(raw)
    if not 1 <= value <= MAX_ID:
        raise ApiError(400, "invalid_id", f"a user id is an integer from 1 to {MAX_ID}")
    return value


def check_query(request: Request, allowed: frozenset[str] = frozenset()) -> None:
    if not request.scope["query_string"]:  # the common case: nothing to parse
        return
    for name in request.query_params:
        if name not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise ApiError(400, "unknown_parameter",
                           f"unknown query parameter {name[:40]!r} (accepted: {known})")


def parse_category(request: Request) -> str | None:
    values = request.query_params.getlist("category")
    if not values:
        return None
    if len(values) > 1:
        raise ApiError(400, "invalid_category", "give category at most once")
    category = values[0]
    if not category or len(category) > MAX_CATEGORY_LEN or not category.isprintable():
        raise ApiError(400, "invalid_category",
                       f"category is 1 to {MAX_CATEGORY_LEN} printable characters")
    return category


def _headers(answer: Answer) -> dict[str, str]:
    if answer.tier is None:
        return {"X-Cache": answer.source}
    return {"X-Cache": answer.source, "X-Cache-Tier": answer.tier}


@functools.lru_cache(maxsize=None)
def _raw_headers(source: str, tier: str | None) -> tuple[tuple[bytes, bytes], ...]:
    """The X-Cache headers and the content type, encoded once per kind of answer."""
    pairs = [*_headers(Answer(None, source, tier)).items(), ("Content-Type", JSON)]
    return tuple((name.lower().encode(), value.encode()) for name, value in pairs)


class UserEndpoint:
    """GET /user/{id}, the hottest route, as a plain ASGI endpoint: no Request or Response
    object and no per-route exception wrapper around each message — together about as
    much as the rest of a near-cache hit.  Starlette routes to it as to any endpoint that
    is not a function; an error it raises reaches the app's exception handlers."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        user_id = parse_id(scope["path_params"]["user_id"])
        if scope["query_string"]:
            check_query(Request(scope))
        svc: Services = scope["app"].state.services

        async def load() -> bytes | None:
            row = await svc.db.user_row(user_id)
            return None if row is None else serialize_user(row)

        answer = await svc.cache.user(user_id, load)
        if answer.body is None:
            missing = json_error(404, "not_found", f"no user with id {user_id}", _headers(answer))
            await missing(scope, receive, send)
            return
        headers = [*_raw_headers(answer.source, answer.tier),
                   (b"content-length", str(len(answer.body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})


user = UserEndpoint()


async def user_nocache(request: Request) -> Response:
    user_id = parse_id(request.path_params["user_id"])
    check_query(request)
    row = await services(request).db.user_row(user_id)
    if row is None:
        return json_error(404, "not_found", f"no user with id {user_id}")
    return Response(serialize_user(row), media_type=JSON)


async def products(request: Request) -> Response:
    check_query(request, frozenset({"category"}))
    category = parse_category(request)
    svc = services(request)

    async def load() -> bytes:
        return serialize_products(await svc.db.product_rows(category))

    answer = await svc.cache.products(category, load)
    return Response(answer.body, media_type=JSON, headers=_headers(answer))
