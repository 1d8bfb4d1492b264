"""The declaration file, read without a database: every mistake is one line naming its entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from cachetail import config
from cachetail.config import ConfigError, EntitySpec, ListSpec

ROOT = Path(__file__).resolve().parent.parent


def errors_of(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config.parse(data, "t.toml")
    return caught.value.errors


def test_the_repository_file_declares_the_lab() -> None:
    lab = config.load(ROOT / "cachetail.toml")
    assert lab.entities == (EntitySpec(
        name="user", table="users", route="/user/{id}", key=("id",),
        columns=("id", "username", "email", "full_name", "created_at", "updated_at"),
        ttl_s=3600, negative_ttl_s=30, nearcache=True, nocache_route="/user/{id}/nocache", key_tag="u"),)
    assert lab.lists == (ListSpec(
        name="products", table="products", route="/products", filters=(("category", "category"),),
        order=(("id", False),), limit=1000, paging=False,
        columns=("id", "name", "description", "price", "stock", "category", "created_at", "updated_at"),
        ttl_s=300, key_tag="p"),)
    assert lab.tables == ("users", "products")
    assert config.config_path({}) == ROOT / "cachetail.toml"
    assert config.config_path({"CACHETAIL_CONFIG": "x.toml"}) == Path("x.toml")


def test_defaults_and_a_composite_key() -> None:
    found = config.parse({"entities": {"order": {"table": "orders", "route": "/orders/{customer_id}/{order_id}",
                                                 "key": ["customer_id", "order_id"]}},
                          "lists": {"order_lines": {"table": "order_lines", "route": "/order-lines",
                                                    "filters": {"order": "order_id"},
                                                    "order": ["order_id", "-line_no"], "limit": 50,
                                                    "paging": True}}})
    order, = found.entities
    assert (order.key, order.columns, order.ttl_s, order.negative_ttl_s, order.nearcache, order.key_tag) == (
        ("customer_id", "order_id"), None, 3600, 30, False, "order")
    lines, = found.lists
    assert lines.order == (("order_id", False), ("line_no", True))
    assert (lines.paging, lines.ttl_s, lines.filters) == (True, 300, (("order", "order_id"),))


def test_every_mistake_is_named_at_once() -> None:
    found = errors_of({
        "entity": {},
        "entities": {"User": {}, "x": {"table": "a b", "route": "/x/{idd}", "key": ["id"], "ttl_s": 0, "bogus": 1}},
        "lists": {"y": {"table": "t", "route": "/y/{id}", "order": [], "limit": 0,
                        "filters": {"after": "a", "b": "c", "c": "d", "d": "e"}}},
    })
    assert found == [
        "entity: unknown section (expected [entities.NAME] or [lists.NAME])",
        "entities.User: a name is 1 to 40 of a-z, 0-9 and _, starting with a letter",
        "entities.x.bogus: unknown setting (known: columns, key, key_tag, nearcache, negative_ttl_s,"
        " nocache_route, route, table, ttl_s)",
        "entities.x.route: /x/{idd} has idd; expected one {param} per key column, in key order: {id}",
        "entities.x.table: expected a table name, got 'a b'",
        "entities.x.ttl_s: expected an integer from 1 to 2592000, got 0",
        "lists.y.route: /y/{id} has id; expected no path parameter",
        "lists.y.filters: at most 3 filters, got 4",
        "lists.y.filters: 'after' is not a usable query parameter name",
        "lists.y.order: expected a non-empty list of columns (\"-col\" descending), got []",
        "lists.y.limit: expected an integer from 1 to 10000, got 0",
    ]


@pytest.mark.parametrize(("data", "message"), [
    ({"entities": {"a": {"table": "t", "route": "/a/{id}", "key": ["id"]}},
      "lists": {"a": {"table": "t", "route": "/as", "order": ["id"], "limit": 5}}},
     "lists.a: the name a is also entities.a"),
    ({"entities": {"a": {"table": "t", "route": "/a/{id}", "key": ["id"]},
                   "b": {"table": "t", "route": "/a/{code}", "key": ["code"]}}},
     "entities.b.route: /a/{code} clashes with entities.a.route (/a/{id})"),
    ({"entities": {"a": {"table": "t", "route": "/a/{id}", "key": ["id"]}},
      "lists": {"b": {"table": "t", "route": "/a/all", "order": ["id"], "limit": 5}}},
     "lists.b.route: /a/all clashes with entities.a.route (/a/{id})"),
    ({"entities": {"a": {"table": "t", "route": "/a/{id}", "key": ["id"], "key_tag": "x"},
                   "b": {"table": "t", "route": "/b/{id}", "key": ["id"], "key_tag": "x"}}},
     "entities.b.key_tag: x is also the key tag of entities.a"),
    ({"entities": {"a": {"table": "t", "route": "/health/{id}", "key": ["id"]}}},
     "entities.a.route: /health/{id} is one of cachetail's own routes"),
    ({"entities": {"a": {"table": "t", "route": "/a/{id}", "key": ["id"], "columns": ["name"]}}},
     "entities.a.columns: must serve the key column(s) id"),
    ({"entities": {"a": {"table": "t", "route": "/a/{x}/{y}/{z}/{w}", "key": ["x", "y", "z", "w"]}}},
     "entities.a.key: expected a list of 1 to 3 column names, got ['x', 'y', 'z', 'w']"),
    ({"entities": {"a": {"table": "t", "route": "a/{id}", "key": ["id"]}}},
     "entities.a.route: expected a path of plain segments and {param} segments, got 'a/{id}'"),
    ({"entities": {"a": {"table": "t", "route": "/a/{id}", "key": ["id"], "nearcache": "yes"}}},
     "entities.a.nearcache: expected true or false, got 'yes'"),
    ({"lists": {"a": {"table": "t", "route": "/a", "order": ["id", "-id"], "limit": 5}}},
     "lists.a.order: names a column twice"),
    ({"lists": {"a": {"table": "t", "route": "/a", "order": ["id"], "limit": 5, "filters": {"x": "c", "y": "c"}}}},
     "lists.a.filters: two parameters filter the same column"),
    ({"lists": {"a": {"table": "t", "route": "/a", "order": ["id"], "limit": 5, "paging": True,
                      "columns": ["name"]}}},
     "lists.a.columns: paging needs the order column(s) id served"),
    ({}, "declares nothing: add an [entities.NAME] or a [lists.NAME] table"),
])
def test_one_line_per_mistake(data: dict, message: str) -> None:
    assert message in errors_of(data)


def test_file_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        config.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[entities.user\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(bad)
