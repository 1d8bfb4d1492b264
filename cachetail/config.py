"""What cachetail caches: entities and lists declared in a TOML file.

The file (``CACHETAIL_CONFIG``; default the repository's ``cachetail.toml``, which
declares the lab's users and products) is read by the API and the invalidator alike,
so a key is still built in exactly one place.  Reading it here checks everything
that needs no database: names, routes, TTLs, limits, filters, order.  Every problem
is one line naming its entry (``lists.products.limit: ...``), all of them at once.
:mod:`cachetail.schema` then checks the declaration against the server's
``information_schema`` (tables, columns, unique keys, supported types).

::

    [entities.user]
    table = "users"
    route = "/user/{id}"            # one path parameter per key column, named after it
    key = ["id"]                    # the primary key or a NOT NULL unique key
    columns = ["id", "username"]    # served columns (default: all, in table order)
    ttl_s = 3600
    negative_ttl_s = 30             # 0: a missing row is not cached
    nearcache = true
    nocache_route = "/user/{id}/nocache"   # optional: always from MySQL
    key_tag = "u"                   # optional: the Redis hash tag (default: the name)

    [lists.products]
    table = "products"
    route = "/products"
    filters = { category = "category" }    # query parameter -> column, at most 3
    order = ["id"]                  # "-price" sorts descending
    limit = 1000                    # rows per answer
    paging = false                  # keyset paging with ?after=
    ttl_s = 300
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "cachetail.toml"
NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,63}")
PARAM = re.compile(r"[a-z][a-z0-9_]{0,39}")
TAG = re.compile(r"[A-Za-z0-9_.-]{1,24}")
ROUTE_PART = re.compile(r"[A-Za-z0-9_.~-]+|\{[A-Za-z_][A-Za-z0-9_]*\}")
RESERVED_ROUTES = ("/cache", "/health", "/metrics", "/docs", "/redoc", "/openapi.json", "/static")
RESERVED_PARAMS = ("after",)
MAX_TTL_S = 30 * 86_400
MAX_LIMIT = 10_000
MAX_FILTERS = 3
MAX_KEY_COLUMNS = 3


class ConfigError(ValueError):
    """The declaration is wrong; ``errors`` holds one line per problem."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source = source
        self.errors = errors
        super().__init__(f"{source}: " + "; ".join(errors))


@dataclass(frozen=True)
class Routed:
    """What an entity and a list both have, and their report views too: a name, a table, a route."""

    name: str
    table: str
    route: str


@dataclass(frozen=True)
class _Spec(Routed):
    section: ClassVar[str]

    @property
    def where(self) -> str:
        """Where in the file the declaration is (``entities.user``), for error lines."""
        return f"{self.section}.{self.name}"


@dataclass(frozen=True)
class EntitySpec(_Spec):
    section = "entities"

    key: tuple[str, ...]
    columns: tuple[str, ...] | None  # None: every column of the table
    ttl_s: int
    negative_ttl_s: int
    nearcache: bool
    nocache_route: str | None
    key_tag: str


@dataclass(frozen=True)
class ListSpec(_Spec):
    section = "lists"

    filters: tuple[tuple[str, str], ...]  # (query parameter, column), in declared order
    order: tuple[tuple[str, bool], ...]  # (column, descending)
    limit: int
    paging: bool
    columns: tuple[str, ...] | None
    ttl_s: int
    key_tag: str


@dataclass(frozen=True)
class Config:
    source: str
    entities: tuple[EntitySpec, ...]
    lists: tuple[ListSpec, ...]

    @property
    def tables(self) -> tuple[str, ...]:
        """Every table a declaration reads, in declaration order, once."""
        seen: dict[str, None] = {}
        specs: tuple[EntitySpec | ListSpec, ...] = (*self.entities, *self.lists)
        for spec in specs:
            seen.setdefault(spec.table, None)
        return tuple(seen)


def config_path(env: Mapping[str, str]) -> Path:
    raw = (env.get("CACHETAIL_CONFIG") or "").strip()
    return Path(raw) if raw else DEFAULT_PATH


def load(path: str | os.PathLike[str]) -> Config:
    source = str(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(source, ["no such file (set CACHETAIL_CONFIG to a cachetail.toml)"]) from None
    except OSError as exc:
        raise ConfigError(source, [f"cannot read it: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"not valid TOML: {exc}"]) from None
    return parse(data, source)


def parse(data: Mapping[str, Any], source: str = "<config>") -> Config:
    errors: list[str] = []
    for name in data:
        if name not in ("entities", "lists"):
            errors.append(f"{name}: unknown section (expected [entities.NAME] or [lists.NAME])")
    entities = [e for e in (_entity(n, t, errors) for n, t in _tables(data, "entities", errors)) if e]
    lists = [s for s in (_list(n, t, errors) for n, t in _tables(data, "lists", errors)) if s]
    if not entities and not lists and not errors:
        errors.append("declares nothing: add an [entities.NAME] or a [lists.NAME] table")
    _check_unique(entities, lists, errors)
    if errors:
        raise ConfigError(source, errors)
    return Config(source, tuple(entities), tuple(lists))


# ------------------------------------------------------------------ entries


class _Entry:
    """Typed reads of one [entities.X] / [lists.X] table, collecting errors."""

    def __init__(self, where: str, table: Mapping[str, Any], allowed: set[str], errors: list[str]) -> None:
        self.where, self.table, self.errors = where, table, errors
        for key in table:
            if key not in allowed:
                errors.append(f"{where}.{key}: unknown setting (known: {', '.join(sorted(allowed))})")

    def error(self, field: str, message: str) -> None:
        self.errors.append(f"{self.where}.{field}: {message}")

    def text(self, field: str, pattern: re.Pattern[str] | None = None, default: str | None = None,
            what: str = "") -> str | None:
        value = self.table.get(field, default)
        if value is None:
            self.error(field, "missing (required)")
            return None
        if not isinstance(value, str) or (pattern is not None and not pattern.fullmatch(value)):
            self.error(field, f"expected {what or 'a string'}, got {value!r:.60}")
            return None
        return value

    def integer(self, field: str, lo: int, hi: int, default: int | None = None) -> int | None:
        value = self.table.get(field, default)
        if value is None:
            self.error(field, "missing (required)")
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            self.error(field, f"expected an integer from {lo} to {hi}, got {value!r:.40}")
            return None
        return value

    def flag(self, field: str, default: bool) -> bool:
        value = self.table.get(field, default)
        if not isinstance(value, bool):
            self.error(field, f"expected true or false, got {value!r:.40}")
            return default
        return value

    def names(self, field: str, required: bool, lo: int = 1, hi: int = 1000,
                pattern: re.Pattern[str] = IDENTIFIER) -> tuple[str, ...] | None:
        value = self.table.get(field)
        if value is None:
            if required:
                self.error(field, "missing (required)")
            return None
        if (not isinstance(value, list) or not lo <= len(value) <= hi
                or not all(isinstance(v, str) and pattern.fullmatch(v) for v in value)):
            self.error(field, f"expected a list of {lo} to {hi} column names, got {value!r:.60}")
            return None
        if len(set(value)) != len(value):
            self.error(field, "names a column twice")
            return None
        return tuple(value)


ENTITY_SETTINGS = {"table", "route", "key", "columns", "ttl_s", "negative_ttl_s", "nearcache",
                   "nocache_route", "key_tag"}
LIST_SETTINGS = {"table", "route", "filters", "order", "limit", "paging", "columns", "ttl_s", "key_tag"}


def _tables(data: Mapping[str, Any], section: str, errors: list[str]) -> list[tuple[str, Mapping[str, Any]]]:
    found = data.get(section, {})
    if not isinstance(found, dict):
        errors.append(f"{section}: expected tables [{section}.NAME]")
        return []
    out: list[tuple[str, Mapping[str, Any]]] = []
    for name, table in found.items():
        if not NAME.fullmatch(name):
            errors.append(f"{section}.{name}: a name is 1 to 40 of a-z, 0-9 and _, starting with a letter")
        elif not isinstance(table, dict):
            errors.append(f"{section}.{name}: expected a table of settings")
        else:
            out.append((name, table))
    return out


def _entity(name: str, table: Mapping[str, Any], errors: list[str]) -> EntitySpec | None:
    e = _Entry(f"entities.{name}", table, ENTITY_SETTINGS, errors)
    before = len(errors)
    key = e.names("key", required=True, hi=MAX_KEY_COLUMNS)
    route = e.text("route", what="a path such as /customers/{code}")
    nocache = table.get("nocache_route")
    if route is not None and key is not None:
        _check_route(e, "route", route, key)
    if nocache is not None:
        if not isinstance(nocache, str):
            e.error("nocache_route", f"expected a path, got {nocache!r:.40}")
        elif key is not None:
            _check_route(e, "nocache_route", nocache, key)
    spec = EntitySpec(
        name=name,
        table=e.text("table", IDENTIFIER, what="a table name") or "",
        route=route or "",
        key=key or (),
        columns=e.names("columns", required=False),
        ttl_s=e.integer("ttl_s", 1, MAX_TTL_S, 3600) or 0,
        negative_ttl_s=_or0(e.integer("negative_ttl_s", 0, MAX_TTL_S, 30)),
        nearcache=e.flag("nearcache", False),
        nocache_route=nocache if isinstance(nocache, str) else None,
        key_tag=e.text("key_tag", TAG, default=name, what="1 to 24 of A-Z a-z 0-9 _ . -") or name,
    )
    if spec.columns is not None and key is not None:
        missing = [k for k in key if k not in spec.columns]
        if missing:
            e.error("columns", f"must serve the key column(s) {', '.join(missing)}")
    return spec if len(errors) == before else None


def _list(name: str, table: Mapping[str, Any], errors: list[str]) -> ListSpec | None:
    e = _Entry(f"lists.{name}", table, LIST_SETTINGS, errors)
    before = len(errors)
    route = e.text("route", what="a path such as /orders")
    if route is not None:
        _check_route(e, "route", route, ())
    filters = _filters(e, table.get("filters", {}))
    order = _order(e, table.get("order"))
    spec = ListSpec(
        name=name,
        table=e.text("table", IDENTIFIER, what="a table name") or "",
        route=route or "",
        filters=filters,
        order=order,
        limit=e.integer("limit", 1, MAX_LIMIT) or 0,
        paging=e.flag("paging", False),
        columns=e.names("columns", required=False),
        ttl_s=e.integer("ttl_s", 1, MAX_TTL_S, 300) or 0,
        key_tag=e.text("key_tag", TAG, default=name, what="1 to 24 of A-Z a-z 0-9 _ . -") or name,
    )
    if spec.columns is not None:
        needed = [c for c, _ in order if c not in spec.columns] if spec.paging else []
        if needed:
            e.error("columns", f"paging needs the order column(s) {', '.join(needed)} served")
    return spec if len(errors) == before else None


def _or0(value: int | None) -> int:
    return 0 if value is None else value


def _check_route(e: _Entry, field: str, route: str, key: tuple[str, ...]) -> None:
    parts = route.split("/")
    if not route.startswith("/") or route == "/" or route.endswith("/") or not all(
            ROUTE_PART.fullmatch(p) for p in parts[1:]):
        e.error(field, f"expected a path of plain segments and {{param}} segments, got {route!r:.60}")
        return
    if route == "/cache" or any(route == r or route.startswith(r + "/") for r in RESERVED_ROUTES):
        e.error(field, f"{route} is one of cachetail's own routes")
        return
    params = tuple(p[1:-1] for p in parts[1:] if p.startswith("{"))
    if params != key:
        want = "no path parameter" if not key else "one {param} per key column, in key order: " + ", ".join(
            "{" + k + "}" for k in key)
        e.error(field, f"{route} has {', '.join(params) or 'no parameters'}; expected {want}")


def _filters(e: _Entry, raw: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, dict):
        e.error("filters", f"expected a table of query parameter = column, got {raw!r:.60}")
        return ()
    if len(raw) > MAX_FILTERS:
        e.error("filters", f"at most {MAX_FILTERS} filters, got {len(raw)}")
    out = []
    for param, column in raw.items():
        if not PARAM.fullmatch(param) or param in RESERVED_PARAMS:
            e.error("filters", f"{param!r:.40} is not a usable query parameter name")
        elif not isinstance(column, str) or not IDENTIFIER.fullmatch(column):
            e.error("filters", f"{param} = {column!r:.40} is not a column name")
        else:
            out.append((param, column))
    if len({c for _, c in out}) != len(out):
        e.error("filters", "two parameters filter the same column")
    return tuple(out)


def _order(e: _Entry, raw: Any) -> tuple[tuple[str, bool], ...]:
    if not isinstance(raw, list) or not raw or not all(isinstance(c, str) for c in raw):
        e.error("order", f"expected a non-empty list of columns (\"-col\" descending), got {raw!r:.60}")
        return ()
    out = []
    for item in raw:
        column = item[1:] if item.startswith("-") else item
        if not IDENTIFIER.fullmatch(column):
            e.error("order", f"{item!r:.40} is not a column name")
        else:
            out.append((column, item.startswith("-")))
    if len({c for c, _ in out}) != len(out):
        e.error("order", "names a column twice")
    return tuple(out)


def _overlap(a: str, b: str) -> bool:
    """True when some path matches both routes (segment by segment equal, or a {param})."""
    pa, pb = a.split("/"), b.split("/")
    return len(pa) == len(pb) and all(x == y or x.startswith("{") or y.startswith("{")
                                      for x, y in zip(pa, pb, strict=True))


def _check_unique(entities: list[EntitySpec], lists: list[ListSpec], errors: list[str]) -> None:
    names: dict[str, str] = {}
    tags: dict[str, str] = {}
    routes: list[tuple[str, str]] = []
    specs: list[EntitySpec | ListSpec] = [*entities, *lists]
    for spec in specs:
        if spec.name in names:  # an entity and a list share the metric label `entity`
            errors.append(f"{spec.where}: the name {spec.name} is also {names[spec.name]}")
        names.setdefault(spec.name, spec.where)
        if spec.key_tag in tags:
            errors.append(f"{spec.where}.key_tag: {spec.key_tag} is also the key tag of {tags[spec.key_tag]}")
        tags.setdefault(spec.key_tag, spec.where)
        own = [("route", spec.route)]
        if isinstance(spec, EntitySpec) and spec.nocache_route:
            own.append(("nocache_route", spec.nocache_route))
        for field, route in own:
            clash = next((where for other, where in routes if _overlap(route, other)), None)
            if clash:
                errors.append(f"{spec.where}.{field}: {route} clashes with {clash}")
            routes.append((route, f"{spec.where}.{field} ({route})"))
