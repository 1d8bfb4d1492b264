"""Every error answer is JSON ``{"error": ..., "detail": ...}``; no SQL text, no traceback."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.db import DatabaseUnavailable

log = logging.getLogger("api")

_NAMES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 422: "unprocessable", 503: "unavailable"}


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str,
                 headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers
        super().__init__(f"{status} {error}: {detail}")


def json_error(status: int, error: str, detail: str,
               headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


async def on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return json_error(exc.status, exc.error, exc.detail, exc.headers)


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = exc.detail if exc.status_code != 404 else f"no route for {request.url.path}"
    if exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    return json_error(exc.status_code, _NAMES.get(exc.status_code, "error"), detail,
                      dict(exc.headers) if exc.headers else None)


async def on_database_unavailable(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DatabaseUnavailable)
    log.warning("MySQL unavailable (%s) for %s %s", exc.error_class, request.method,
                request.url.path)
    return json_error(503, "database_unavailable",
                      "MySQL is unavailable and the answer is not cached; retry later",
                      {"Retry-After": "1"})


async def on_unexpected(request: Request, exc: Exception) -> Response:
    log.error("unexpected %s on %s %s", type(exc).__name__, request.method, request.url.path,
              exc_info=exc)
    return json_error(500, "internal_error", "an unexpected error; it has been logged")


HANDLERS = {
    ApiError: on_api_error,
    HTTPException: on_http_exception,
    DatabaseUnavailable: on_database_unavailable,
    Exception: on_unexpected,
}
