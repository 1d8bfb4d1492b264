"""GET /openapi.json, /docs (Swagger UI) and /redoc (ReDoc), all served from this host.

The two readers come from drf-spectacular-sidecar's dist files, found with
importlib's spec so the package (a Django app) is never imported: no CDN, no
Django, works offline.
"""

from __future__ import annotations

import html
import importlib.util
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.staticfiles import StaticFiles

from cachetail.keyspace import MAX_CATEGORY_LEN, MAX_ID

STATIC_PATH = "/static/docs"
# Scripts and styles are the local bundles; what the policy adds is that nothing
# they fetch or show (ReDoc's sidebar logo is an image on a CDN) may leave this host.
_CSP = ("img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


def sidecar_static_dir() -> Path:
    spec = importlib.util.find_spec("drf_spectacular_sidecar")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("drf-spectacular-sidecar is not installed")
    base = Path(next(iter(spec.submodule_search_locations)))
    return base / "static" / "drf_spectacular_sidecar"


def static_files() -> StaticFiles:
    return StaticFiles(directory=sidecar_static_dir())


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _json(description: str, schema: dict[str, Any], x_cache: bool = False) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description,
                              "content": {"application/json": {"schema": schema}}}
    if x_cache:
        answer["headers"] = {"X-Cache": {"description": "HIT, MISS or BYPASS (Redis unavailable)",
                                         "schema": {"type": "string",
                                                    "enum": ["HIT", "MISS", "BYPASS"]}}}
    return answer


_STR = {"type": "string"}
_TIME = {"type": "string", "format": "date-time", "example": "2024-01-31T12:00:00Z"}
_ID_PARAM = {"name": "user_id", "in": "path", "required": True,
             "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID}}
_REF = {name: {"$ref": f"#/components/schemas/{name}"} for name in ("User", "Product")}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error", "detail"],
              "properties": {"error": _STR, "detail": _STR}},
    "User": {"type": "object", "properties": {
        "id": {"type": "integer"}, "username": _STR, "email": _STR, "full_name": _STR,
        "created_at": _TIME, "updated_at": _TIME}},
    "Product": {"type": "object", "properties": {
        "id": {"type": "integer"}, "name": _STR, "description": {"type": ["string", "null"]},
        "price": {"type": "string", "example": "19.99", "description": "decimal string"},
        "stock": {"type": "integer"}, "category": _STR, "created_at": _TIME,
        "updated_at": _TIME}},
}


def openapi_schema() -> dict[str, Any]:
    bad = _error("malformed input")
    return {
        "openapi": "3.1.0",
        "info": {"title": "cachetail", "version": "0.1.0",
                 "description": "Users and products, cache-aside from Redis; MySQL is the truth."},
        "paths": {
            "/user/{user_id}": {"get": {
                "summary": "One user (cached)", "parameters": [_ID_PARAM],
                "responses": {"200": _json("the user", _REF["User"], True), "400": bad,
                              "404": _error("no such user"), "503": _error("MySQL down, not cached")}}},
            "/user/{user_id}/nocache": {"get": {
                "summary": "One user, straight from MySQL", "parameters": [_ID_PARAM],
                "responses": {"200": _json("the user", _REF["User"]), "400": bad,
                              "404": _error("no such user"), "503": _error("MySQL down")}}},
            "/products": {"get": {
                "summary": "Every product ordered by id (cached per category)",
                "parameters": [{"name": "category", "in": "query", "required": False,
                                "schema": {"type": "string", "minLength": 1,
                                           "maxLength": MAX_CATEGORY_LEN}}],
                "responses": {"200": _json("the products", {"type": "array", "items": _REF["Product"]}, True),
                              "400": bad, "503": _error("MySQL down, not cached")}}},
            "/cache/stats": {"get": {
                "summary": "Hits, misses and bypasses of this API; Redis's own figures",
                "responses": {"200": _json("figures", {"type": "object"})}}},
            "/cache/clear": {"post": {
                "summary": "Remove every cachetail key (never FLUSHDB)",
                "security": [{"bearer": []}],
                "responses": {"200": _json("count removed", {"type": "object", "properties": {
                    "removed": {"type": "integer"}}}),
                    "401": _error("no Authorization header"),
                    "403": _error("wrong token, or clearing disabled"),
                    "503": _error("Redis unavailable")}}},
            "/health": {"get": {
                "summary": "State of MySQL and Redis",
                "responses": {"200": _json("ok or degraded (Redis down)", {"type": "object"}),
                              "503": _json("MySQL down", {"type": "object"})}}},
            "/metrics": {"get": {"summary": "Prometheus metrics",
                                 "responses": {"200": {"description": "text format"}}}},
        },
        "components": {"schemas": SCHEMAS,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


async def openapi(request: Request) -> Response:
    return JSONResponse(openapi_schema())


def _page(request: Request, title: str, head: str, body: str) -> HTMLResponse:
    root = html.escape(request.scope.get("root_path", ""), quote=True)
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{title}</title>{head}</head><body>{body}</body></html>")
    return HTMLResponse(page.replace("{root}", root), headers={"Content-Security-Policy": _CSP})


async def swagger_ui(request: Request) -> Response:
    static = "{root}" + STATIC_PATH + "/swagger-ui-dist"
    return _page(
        request, "cachetail — Swagger UI",
        f'<link rel="stylesheet" href="{static}/swagger-ui.css">'
        f'<link rel="icon" type="image/png" href="{static}/favicon-32x32.png">',
        f'<div id="swagger-ui"></div><script src="{static}/swagger-ui-bundle.js"></script>'
        "<script>SwaggerUIBundle({url: '{root}/openapi.json', dom_id: '#swagger-ui',"
        " validatorUrl: null, deepLinking: true});</script>",
    )


async def redoc(request: Request) -> Response:
    static = "{root}" + STATIC_PATH + "/redoc/bundles"
    return _page(
        request, "cachetail — ReDoc", "",
        '<redoc spec-url="{root}/openapi.json"></redoc>'
        f'<script src="{static}/redoc.standalone.js"></script>',
    )
