"""GET /user/{id}, /user/{id}/nocache and /products: validated input, cached bodies."""

from __future__ import annotations

import functools

from starlette.requests import Request
from starlette.responses import Response

from api.cache import Answer
from api.errors import ApiError, json_error
from api.services import services
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
    return tuple((name.lower().encode(), value.encode())
                 for name, value in _headers(Answer(None, source, tier)).items())


class CachedBody(Response):
    """A cached JSON body with its X-Cache headers, encoded once per kind of answer:
    Starlette encodes a headers mapping on every response, a measurable share of a
    near-cache hit."""

    media_type = JSON

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.body)
        self.raw_headers[:0] = _raw_headers(answer.source, answer.tier)


def _user_answer(answer: Answer, user_id: int) -> Response:
    if answer.body is None:
        return json_error(404, "not_found", f"no user with id {user_id}", _headers(answer))
    return CachedBody(answer)


async def user(request: Request) -> Response:
    user_id = parse_id(request.path_params["user_id"])
    check_query(request)
    svc = services(request)

    async def load() -> bytes | None:
        row = await svc.db.user_row(user_id)
        return None if row is None else serialize_user(row)

    return _user_answer(await svc.cache.user(user_id, load), user_id)


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

    return CachedBody(await svc.cache.products(category, load))
