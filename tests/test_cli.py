"""`cachetail check|api|invalidator` as operators run it, against the session's MariaDB."""

from __future__ import annotations

import json
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from cachetail.devstack import free_port
from cli_support import LAB, ROOT, cachetail
from conftest import API_PASSWORD, Stack

GRANTS_ON_THE_LAB = """\
  -- the API, 'cachetail_api'@'%' (from DB_USER): SELECT on each table
  GRANT SELECT ON `cachelab`.`users` TO 'cachetail_api'@'%';
  GRANT SELECT ON `cachelab`.`products` TO 'cachetail_api'@'%';
  -- the invalidator, 'cachetail_invalidator'@'%' (as in sql/grants.sql): the binlog, and SELECT on each table
  GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'cachetail_invalidator'@'%';
  GRANT SELECT ON `cachelab`.`users` TO 'cachetail_invalidator'@'%';
  GRANT SELECT ON `cachelab`.`products` TO 'cachetail_invalidator'@'%';
"""


def db_env(stack: Stack) -> dict[str, str]:
    return {"DB_HOST": stack.mariadb.host, "DB_PORT": str(stack.mariadb.port), "DB_NAME": "cachelab",
            "DB_USER": "cachetail_api", "DB_PASSWORD": API_PASSWORD}


def test_check_prints_what_the_lab_resolves_to(stack: Stack, tmp_path: Path) -> None:
    done = cachetail(tmp_path, db_env(stack), "check")  # the default file: the repository's
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    out = done.stdout
    assert out.splitlines()[0] == (f"{LAB}: valid, checked against cachelab at 127.0.0.1:{stack.mariadb.port}"
                                   " as cachetail_api (from DB_USER)")
    user = out[out.index("entity user: table users"):out.index("list products")]
    assert user.splitlines() == [
        "entity user: table users",
        "  GET /user/{id}",
        "  GET /user/{id}/nocache   always from MySQL, never cached",
        "  key         id  int(10) unsigned (in Redis: decimal)",
        "  columns     id, username, email, full_name, created_at, updated_at",
        "  ttl         3600 s; a 404 for 30 s",
        "  near-cache  on",
        "  redis key   ct:{u:<id>}",
        "",
    ]
    products = out[out.index("list products"):out.index("tables the invalidator")]
    assert "  GET /products   query parameters, each optional: category\n" in products
    # utf8mb4_unicode_ci: 'books' and 'Books ' name the same variant, by the collation's weight
    assert ("  filters     category: column category varchar(50) utf8mb4_unicode_ci, by collation weight"
            in products)
    assert "  order       id\n  limit       1000 rows an answer\n  paging      off\n" in products
    assert products.split("redis keys")[1].splitlines()[1:] == [
        "              ct:{p}:gen",
        "              ct:{p}:v",
        "              ct:{p:category=~<weight(category)>}:gen",
        "              ct:{p:category=~<weight(category)>}:v",
        "",
    ]
    assert "tables the invalidator follows, in cachelab\n  users     entity user\n  products  list products\n" in out
    assert out.endswith(GRANTS_ON_THE_LAB)
    assert API_PASSWORD not in out


def test_check_json_and_the_key_prefix(stack: Stack, tmp_path: Path) -> None:
    done = cachetail(tmp_path, {**db_env(stack), "CACHE_KEY_PREFIX": "shop1"}, "check", "--config", str(LAB),
                     "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["valid"] is True and report["database"] == "cachelab"
    assert report["target"] == {"host": "127.0.0.1", "port": stack.mariadb.port, "database": "cachelab",
                                "user": "cachetail_api", "user_source": "DB_USER"}
    user, = report["entities"]
    assert user["redis_key"] == "shop1:{u:<id>}"
    assert user["key"] == [{"name": "id", "type": "int(10) unsigned", "collation": None, "spelling": "decimal",
                            "other_spellings": False}]
    assert user["negatives_cached"] is True
    products, = report["lists"]
    assert products["filters"][0]["match"] == "collation weight" and products["filters"][0]["pads_spaces"]
    assert [v["generation"] for v in products["variants"]] == [
        "shop1:{p}:gen", "shop1:{p:category=~<weight(category)>}:gen"]
    assert [t["name"] for t in report["tables"]] == ["users", "products"]
    assert [a["role"] for a in report["accounts"]] == ["api", "invalidator"]
    assert API_PASSWORD not in done.stdout


BROKEN_AGAINST_THE_DATABASE = """
[entities.a]
table = "users"
route = "/a/{id}"
key = ["id"]
columns = ["id", "nick"]

[entities.b]
table = "users"
route = "/b/{full_name}"
key = ["full_name"]

[lists.c]
table = "nope"
route = "/c"
order = ["id"]
limit = 10

[lists.d]
table = "products"
route = "/d"
order = ["category"]
limit = 10
paging = true
"""

BROKEN_AS_WRITTEN = """
[entities.a]
table = "users"
route = "/people/{id}"
key = ["id"]

[entities.c]
table = "users"
route = "/c/{id}"
key = ["id"]
ttl_s = 0

[entities.b]
table = "users"
route = "/people/{username}"
key = ["username"]

[lists.a]
table = "products"
route = "/a"
order = ["id"]
limit = 10
"""


@pytest.mark.parametrize(("text", "expected"), [
    (BROKEN_AGAINST_THE_DATABASE, [
        "entities.a.columns: no column nick in users",
        "entities.b.key: (full_name) is not the primary key or a NOT NULL unique key of users"
        " (its unique keys: PRIMARY(id), uq_users_username(username))",
        "lists.c.table: no table cachelab.nope (or no privilege to see it)",
        "lists.d.order: paging needs an order that includes a NOT NULL unique key of products"
        " (its unique keys: PRIMARY(id))",
    ]),
    (BROKEN_AS_WRITTEN, [
        "entities.c.ttl_s: expected an integer from 1 to 2592000, got 0",
        "entities.b.route: /people/{username} clashes with entities.a.route (/people/{id})",
        "lists.a: the name a is also entities.a",
        "lists.a.key_tag: a is also the key tag of entities.a",
    ]),
], ids=["against-the-database", "as-written"])
def test_a_broken_declaration_is_one_line_per_error_and_exit_2(stack: Stack, tmp_path: Path, text: str,
                                                                expected: list[str]) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(text)
    done = cachetail(tmp_path, db_env(stack), "check", "--config", str(path))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [f"{path}: {line}" for line in expected]
    as_json = cachetail(tmp_path, db_env(stack), "check", "--config", str(path), "--json")
    assert as_json.returncode == 2
    assert json.loads(as_json.stdout) == {"config": str(path), "valid": False, "errors": expected}


def test_a_missing_file_is_one_line_and_exit_2(stack: Stack, tmp_path: Path) -> None:
    done = cachetail(tmp_path, {**db_env(stack), "CACHETAIL_CONFIG": "nowhere.toml"}, "check")
    assert done.returncode == 2
    assert done.stderr == "nowhere.toml: no such file (set CACHETAIL_CONFIG to a cachetail.toml)\n"


def test_an_unreachable_database_is_one_line_and_exit_1(stack: Stack, tmp_path: Path) -> None:
    secret = "never-printed-pw-4711"
    port = free_port()  # nothing listens there
    done = cachetail(tmp_path, {**db_env(stack), "DB_PORT": str(port), "DB_PASSWORD": secret}, "check")
    assert done.returncode == 1
    assert done.stdout == ""
    line, = done.stderr.splitlines()
    assert line.startswith(f"cachetail check: not checked: cannot connect to MySQL at 127.0.0.1:{port}"
                           " as cachetail_api (from DB_USER): (2003) ")
    # reachable, but the password is wrong: not checked either, and the password never shown
    refused = cachetail(tmp_path, {**db_env(stack), "DB_PASSWORD": secret}, "check")
    assert refused.returncode == 1
    line, = refused.stderr.splitlines()
    assert "(1045) Access denied for user 'cachetail_api'" in line
    assert secret not in done.stderr + refused.stderr + done.stdout + refused.stdout


def test_no_account_is_one_line_and_exit_1(tmp_path: Path) -> None:
    done = cachetail(tmp_path, {}, "check")
    assert done.returncode == 1
    assert done.stderr == ("cachetail check: not checked: no account to connect with: set DB_USER and DB_PASSWORD"
                           " (or INVALIDATOR_DB_USER and INVALIDATOR_DB_PASSWORD), or use --offline\n")


def test_offline_needs_no_database(tmp_path: Path) -> None:
    done = cachetail(tmp_path, {"DB_HOST": "127.0.0.1", "DB_PORT": str(free_port())}, "check", "--offline")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.splitlines()[0] == (f"{LAB}: valid as written (--offline: tables, columns, keys and types"
                                   " in cachelab not checked)")
    assert "  key         id  type (known online)\n" in out
    assert "  redis key   ct:{u:<id>}\n" in out
    assert "  filters     category: column category, exact or by collation weight (known online)\n" in out
    assert "-- the API, 'cachetail_api'@'%' (as in sql/grants.sql): SELECT on each table" in out
    # offline still reads the file: a broken one is exit 2
    broken = tmp_path / "broken.toml"
    broken.write_text(BROKEN_AS_WRITTEN)
    assert cachetail(tmp_path, {}, "check", "--offline", "--config", str(broken)).returncode == 2


def test_the_env_file_and_the_invalidator_account(stack: Stack, tmp_path: Path) -> None:
    env_file = tmp_path / "lab.env"
    env_file.write_text(f"DB_HOST=127.0.0.1\nDB_PORT={stack.mariadb.port}\nDB_USER=cachetail_api\n"
                        f"DB_PASSWORD={API_PASSWORD}\nINVALIDATOR_DB_USER=cachetail_invalidator\n"
                        "INVALIDATOR_DB_PASSWORD=inv-test-pw\n")
    done = cachetail(tmp_path, {}, "check", "--env-file", str(env_file), "--account", "invalidator")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].endswith(" as cachetail_invalidator (from INVALIDATOR_DB_USER)")
    assert ("-- the invalidator, 'cachetail_invalidator'@'%' (from INVALIDATOR_DB_USER): the binlog,"
            " and SELECT on each table") in done.stdout
    assert "inv-test-pw" not in done.stdout
    missing = cachetail(tmp_path, {}, "check", "--env-file", str(tmp_path / "none.env"))
    assert missing.returncode == 2 and "--env-file: no such file" in missing.stderr


def test_the_printed_grants_run_and_are_enough(stack: Stack, tmp_path: Path) -> None:
    """The statements for two new accounts, run as an administrator, let each check the lab."""
    names = {"DB_USER": "ct_probe_api", "INVALIDATOR_DB_USER": "ct_probe_inv"}
    offline = cachetail(tmp_path, {"DB_NAME": "cachelab", **names}, "check", "--offline")
    statements = [line.strip() for line in offline.stdout.splitlines() if line.strip().startswith("GRANT")]
    assert len(statements) == 5
    db = stack.mariadb
    probe = {**db_env(stack), "DB_USER": "ct_probe_api", "DB_PASSWORD": "probe-pw",
             "INVALIDATOR_DB_USER": "ct_probe_inv", "INVALIDATOR_DB_PASSWORD": "probe-pw"}
    try:
        for user in names.values():
            db.query(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'probe-pw'")
        nothing = cachetail(tmp_path, probe, "check")
        assert nothing.returncode == 1  # not even USE cachelab: not checked
        assert "(1044) Access denied for user 'ct_probe_api'@'%' to database 'cachelab'" in nothing.stderr
        assert statements[0] == "GRANT SELECT ON `cachelab`.`users` TO 'ct_probe_api'@'%';"
        db.query(statements[0])
        half = cachetail(tmp_path, probe, "check")
        assert half.returncode == 2  # products cannot be seen: one line says so
        assert half.stderr == f"{LAB}: lists.products.table: no table cachelab.products (or no privilege to see it)\n"
        for statement in statements[1:]:
            db.query(statement)
        for account in ("api", "invalidator"):
            after = cachetail(tmp_path, probe, "check", "--account", account)
            assert after.returncode == 0, after.stderr
        conn = db.connect(user="ct_probe_inv", password="probe-pw")
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW BINARY LOGS")  # REPLICATION CLIENT (MariaDB: BINLOG MONITOR)
                assert cur.fetchall()
        finally:
            conn.close()
    finally:
        for user in names.values():
            db.query(f"DROP USER IF EXISTS '{user}'@'%'")


def test_api_and_invalidator_delegate(stack: Stack, tmp_path: Path) -> None:
    env = stack.api_env()
    for command, script in (("api", "cachetail-api"), ("invalidator", "invalidator")):
        done = cachetail(tmp_path, env, command, "--help", script="cachetail")
        original = cachetail(tmp_path, env, "--help", script=script)
        assert done.returncode == 0 == original.returncode, done.stderr
        assert done.stdout == original.stdout
        assert done.stdout.startswith(f"usage: {script} ")
    # the arguments after the command are the command's own: --check asks a worker's /health
    port = free_port()  # no worker there
    health = cachetail(tmp_path, {"INVALIDATOR_METRICS_PORT": str(port)}, "invalidator", "--check")
    assert health.returncode == 1
    answer = json.loads(health.stdout)
    assert answer["healthy"] is False and f"http://127.0.0.1:{port}/health" in answer["error"]


def test_the_console_script_is_declared() -> None:
    found, = entry_points(group="console_scripts", name="cachetail")
    assert found.value == "cachetail_cli.main:main"
    assert (Path(sys.executable).parent / "cachetail").is_file()
    assert {e.name for e in entry_points(group="console_scripts")} >= {"cachetail-api", "invalidator"}
    assert (ROOT / "cachetail_cli" / "__main__.py").is_file()
