"""The declaration against a real server's information_schema: one line per problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from cachetail import config, schema
from cachetail.config import ConfigError
from support.stack import Stack

ROOT = Path(__file__).resolve().parent.parent
DDL = """
CREATE TABLE IF NOT EXISTS cachelab.schema_probe (
    id INT NOT NULL PRIMARY KEY,
    code VARCHAR(20) NOT NULL,
    maybe VARCHAR(20) NULL,
    shape POINT NULL,
    note TEXT NULL,
    st ENUM('new', 'sent', 'lost') NULL,
    tags SET('a', 'b') NULL,
    happened DATETIME NULL,
    stamped TIMESTAMP NULL DEFAULT NULL,
    tm TIME NULL,
    day DATE NULL,
    UNIQUE KEY uq_code (code),
    UNIQUE KEY uq_maybe (maybe)
)"""


@pytest.fixture
def conn(stack: Stack):
    c = stack.mariadb.connect(database="cachelab")
    with c.cursor() as cur:
        cur.execute(DDL)
    yield c
    c.close()


def resolve(conn, data: dict) -> schema.Catalog:
    return schema.resolve(config.parse(data, "t.toml"), conn, "cachelab")


def errors_of(conn, data: dict) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        resolve(conn, data)
    return caught.value.errors


def test_the_lab_resolves(conn) -> None:
    catalog = schema.resolve(config.load(ROOT / "cachetail.toml"), conn, "cachelab")
    user, = catalog.entities
    assert user.keys.names == ("id",) and user.negatives
    assert user.select_sql == ("SELECT `id`, `username`, `email`, `full_name`, `created_at`, `updated_at`"
                               " FROM `cachelab`.`users` WHERE `id` = %s")
    products, = catalog.lists
    category, = products.filters
    # utf8mb4_unicode_ci: 'books' finds 'Books', so the variant is named by the collation weight
    assert category.param == "category" and category.weigher is not None
    assert products.order_sql == "ORDER BY `id` LIMIT 1000" and products.cursor is None
    assert catalog.on_table("users") == ((user,), ())


def test_an_integer_filter_is_exact_and_paging_has_a_cursor(conn) -> None:
    catalog = resolve(conn, {"lists": {"p": {"table": "products", "route": "/p", "filters": {"stock": "stock"},
                                             "order": ["-stock", "id"], "limit": 20, "paging": True}}})
    listing, = catalog.lists
    assert listing.filters[0].weigher is None
    assert listing.cursor is not None and listing.cursor.names == ("stock", "id")
    assert listing.order_sql == "ORDER BY `stock` DESC, `id` LIMIT 20"


@pytest.mark.parametrize(("data", "message"), [
    ({"entities": {"a": {"table": "nope", "route": "/a/{id}", "key": ["id"]}}},
     "entities.a.table: no table cachelab.nope (or no privilege to see it)"),
    ({"entities": {"a": {"table": "users", "route": "/a/{id}", "key": ["id"], "columns": ["id", "nick"]}}},
     "entities.a.columns: no column nick in users"),
    ({"entities": {"a": {"table": "users", "route": "/a/{full_name}", "key": ["full_name"]}}},
     "entities.a.key: (full_name) is not the primary key or a NOT NULL unique key of users"
     " (its unique keys: PRIMARY(id), uq_users_username(username))"),
    ({"entities": {"a": {"table": "schema_probe", "route": "/a/{maybe}", "key": ["maybe"],
                         "columns": ["id", "maybe"]}}},
     "entities.a.key: key column 'maybe' (varchar(20)): a key column must be NOT NULL"),
    ({"entities": {"a": {"table": "schema_probe", "route": "/a/{code}", "key": ["code"],
                         "columns": ["id", "code"]}}},
     ""),
    ({"entities": {"a": {"table": "schema_probe", "route": "/a/{id}", "key": ["id"]}}},
     "entities.a.columns: column 'shape' (point): type point is not supported"),
    ({"lists": {"a": {"table": "users", "route": "/a", "order": ["full_name"], "limit": 5, "paging": True}}},
     "lists.a.order: paging needs an order that includes a NOT NULL unique key of users"
     " (its unique keys: PRIMARY(id), uq_users_username(username))"),
    ({"lists": {"a": {"table": "users", "route": "/a", "order": ["nick"], "limit": 5}}},
     "lists.a.order: no column nick in users"),
])
def test_one_line_per_problem(conn, data: dict, message: str) -> None:
    if not message:  # the control: a unique NOT NULL VARCHAR key is fine
        assert resolve(conn, data).entities[0].keys.names == ("code",)
        return
    found = errors_of(conn, data)
    assert any(line.startswith(message) for line in found), found


def test_a_text_filter_is_refused_with_its_reason(conn) -> None:
    found = errors_of(conn, {"lists": {"a": {"table": "schema_probe", "route": "/a", "filters": {"n": "note"},
                                             "order": ["id"], "limit": 5, "columns": ["id", "note"]}}})
    assert found == ["lists.a.filters: filter column 'note' (text): only integers, CHAR, VARCHAR, BINARY,"
                     " VARBINARY, ENUM and DATE can filter a list"], found


def test_enum_and_date_filter_lists_and_set_and_instants_are_refused_with_why(conn) -> None:
    catalog = resolve(conn, {"lists": {"a": {"table": "schema_probe", "route": "/a", "order": ["id"], "limit": 5,
                                             "filters": {"status": "st", "day": "day"}, "columns": ["id", "st"]}}})
    status, day = catalog.lists[0].filters
    assert status.members == ("new", "sent", "lost") and not status.by_weight  # named by the member
    assert day.weigher is None and day.codec.parse(["2024-02-29"]) == (__import__("datetime").date(2024, 2, 29),)
    found = errors_of(conn, {"lists": {"a": {"table": "schema_probe", "route": "/a", "order": ["id"], "limit": 5,
                                             "filters": {"t": "tags", "h": "happened", "s": "stamped"},
                                             "columns": ["id"]}}})
    assert found == [
        "lists.a.filters: filter column 'tags' (set('a','b')): cannot filter a list: equality on a SET compares"
        " the whole combination of members, so a row holding 'a,b' is in no variant 'a'; filter on a generated"
        " column or a child table instead",
        "lists.a.filters: filter column 'happened' (datetime): cannot filter a list: an equality filter matches"
        " one instant to the microsecond, never what a list filter means; filter on a DATE column (a generated"
        " column DATE(...) works)",
        "lists.a.filters: filter column 'stamped' (timestamp): cannot filter a list: an equality filter matches"
        " one instant to the microsecond, never what a list filter means; filter on a DATE column (a generated"
        " column DATE(...) works)"], found
    assert "lists.a.filters: filter column 'tm' (time): cannot filter a list" in errors_of(
        conn, {"lists": {"a": {"table": "schema_probe", "route": "/a", "order": ["id"], "limit": 5,
                               "filters": {"t": "tm"}, "columns": ["id"]}}})[0]
