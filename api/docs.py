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

from cachetail import gtid
from cachetail.codec import Column
from cachetail.codec_cursor import MAX_CURSOR, cursor_pattern
from cachetail.codec_keys import param_schema
from cachetail.config import Config, EntitySpec, ListSpec
from cachetail.schema import Catalog, Entity, Listing

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
        answer["headers"] = {"X-Cache": {
            "description": "HIT, MISS, BYPASS (Redis unavailable) or PRIMARY (a Cachetail-Min-GTID not"
                           " applied in time: read from the primary, not stored)",
            "schema": {"type": "string", "enum": ["HIT", "MISS", "BYPASS", "PRIMARY"]}}}
    return answer


_STR = {"type": "string"}


def min_gtid(flavor: str | None) -> dict[str, Any]:
    """Read your own writes (README): every declared GET takes it."""
    pattern = gtid.PATTERNS.get(flavor or gtid.MARIADB, gtid.MARIADB_PATTERN)
    return {"name": "Cachetail-Min-GTID", "in": "header", "required": False,
            "description": "The answer reflects at least this transaction: a GTID or GTID state as the"
                           " server prints it (MariaDB @@last_gtid: domain-server-sequence[,...]; MySQL:"
                           " uuid:number[-number][,...]).  Malformed: 400.",
            "schema": {"type": "string", "maxLength": gtid.MAX_TEXT, "pattern": pattern}}
ERROR = {"type": "object", "required": ["error", "detail"], "properties": {"error": _STR, "detail": _STR}}


def column_schema(column: Column | None) -> dict[str, Any]:
    """The JSON form of a served column (cachetail/codec.py), as a JSON Schema."""
    if column is None:
        return {}
    t = column.data_type
    schema: dict[str, Any]
    if column.integer_bits or t in ("bit", "year"):
        schema = {"type": "integer"}
        if column.integer_bits:
            schema["minimum"], schema["maximum"] = column.integer_range
    elif t in ("float", "double"):
        schema = {"type": "number"}
    elif t == "decimal":
        schema = {"type": "string", "description": "decimal string", "example": "19.99"}
    elif t == "timestamp":
        schema = {"type": "string", "format": "date-time", "example": "2024-01-31T12:00:00Z"}
    elif t == "datetime":
        schema = {"type": "string", "description": "local date and time, no zone"}
    elif t == "date":
        schema = {"type": "string", "format": "date"}
    elif t == "set":
        schema = {"type": "array", "items": {"type": "string", "enum": list(column.members)}}
    elif t == "enum":
        schema = {"type": "string", "enum": list(column.members)}
    elif column.is_json:
        schema = {}
    elif t == "binary" and column.char_length == 16:
        schema = {"type": "string", "format": "uuid"}
    elif column.is_binary:
        schema = {"type": "string", "contentEncoding": "base64"}
    else:
        schema = {"type": "string"}
    if column.nullable and schema:
        schema = {"anyOf": [schema, {"type": "null"}]}
    return schema


def _object(columns: tuple[Column, ...]) -> dict[str, Any]:
    return {"type": "object", "properties": {c.name: column_schema(c) for c in columns}}


def _parameter(name: str, where: str, column: Column | None, required: bool) -> dict[str, Any]:
    """A key or filter parameter: exactly what the API accepts (cachetail/codec_keys.py)."""
    schema = param_schema(column) if column is not None else {"type": "string"}
    return {"name": name, "in": where, "required": required, "schema": schema}


def _entity_paths(spec: EntitySpec, entity: Entity | None, ref: dict[str, Any], flavor: str | None
                  ) -> dict[str, Any]:
    columns = {c.name: c for c in entity.keys.columns} if entity is not None else {}
    params = [_parameter(k, "path", columns.get(k), True) for k in spec.key] + [min_gtid(flavor)]
    bad = _error("malformed key or Cachetail-Min-GTID")
    paths = {spec.route: {"get": {
        "summary": f"One {spec.name} (cached {spec.ttl_s} s)", "tags": [spec.name], "parameters": params,
        "responses": {"200": _json(f"the {spec.name}", ref, True), "400": bad,
                      "404": _error(f"no such {spec.name}"), "503": _error("MySQL down, not cached")}}}}
    if spec.nocache_route:
        paths[spec.nocache_route] = {"get": {
            "summary": f"One {spec.name}, straight from MySQL", "tags": [spec.name], "parameters": params,
            "responses": {"200": _json(f"the {spec.name}", ref), "400": bad,
                          "404": _error(f"no such {spec.name}"), "503": _error("MySQL down")}}}
    return paths


def _list_paths(spec: ListSpec, listing: Listing | None, ref: dict[str, Any], flavor: str | None
                ) -> dict[str, Any]:
    columns = {f.param: f.column for f in listing.filters} if listing is not None else {}
    params = [_parameter(p, "query", columns.get(p), False) for p, _ in spec.filters]
    order = ", ".join(("-" if desc else "") + c for c, desc in spec.order)
    answer = _json(f"up to {spec.limit} rows, ordered by {order}", {"type": "array", "items": ref}, True)
    if spec.paging:
        cursor = {"type": "string", "maxLength": MAX_CURSOR}
        if listing is not None and listing.cursor is not None:
            cursor["pattern"] = cursor_pattern(listing.cursor.columns)
        params.append({"name": "after", "in": "query", "required": False, "schema": cursor,
                       "description": "the cursor of the previous page's Link: rel=\"next\" (the order"
                                      " columns' values, each as in a key, joined by ':')"})
        answer["headers"]["Link"] = {"description": "rel=\"next\": the next page, when this one is full",
                                     "schema": _STR}
    params.append(min_gtid(flavor))
    return {spec.route: {"get": {
        "summary": f"{spec.name}, cached {spec.ttl_s} s per filter combination", "tags": [spec.name],
        "parameters": params,
        "responses": {"200": answer, "400": _error("malformed filter, cursor or Cachetail-Min-GTID"),
                      "503": _error("MySQL down, not cached")}}}}


def openapi_schema(config: Config, catalog: Catalog | None, flavor: str | None = None) -> dict[str, Any]:
    """The document for the declared entities and lists; column types once the catalog is read."""
    schemas: dict[str, Any] = {"Error": ERROR}
    paths: dict[str, Any] = {}
    for spec in config.entities:
        entity = next((e for e in catalog.entities if e.name == spec.name), None) if catalog else None
        schemas[spec.name] = _object(entity.columns) if entity is not None else {"type": "object"}
        paths.update(_entity_paths(spec, entity, {"$ref": f"#/components/schemas/{spec.name}"}, flavor))
    for lspec in config.lists:
        listing = next((x for x in catalog.lists if x.name == lspec.name), None) if catalog else None
        schemas[lspec.name] = _object(listing.columns) if listing is not None else {"type": "object"}
        paths.update(_list_paths(lspec, listing, {"$ref": f"#/components/schemas/{lspec.name}"}, flavor))
    names = ", ".join([e.name for e in config.entities] + [x.name for x in config.lists])
    paths.update(ADMIN_PATHS)
    return {
        "openapi": "3.1.0",
        "info": {"title": "cachetail", "version": "0.1.0",
                 "description": f"{names}: cache-aside from Redis, declared in {Path(config.source).name};"
                                " MySQL is the truth."},
        "paths": paths,
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


ADMIN_PATHS: dict[str, Any] = {
    "/cache/stats": {"get": {
        "summary": "Hits, misses and bypasses of this API, per entity and list; Redis's own figures",
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
}


async def openapi(request: Request) -> Response:
    svc = request.app.state.services
    return JSONResponse(openapi_schema(svc.config, svc.catalog, svc.fresh.flavor))


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
