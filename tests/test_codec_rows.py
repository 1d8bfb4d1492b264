"""RowCodec against a real MariaDB: a cold SELECT and the binlog row image of the same row
give byte-identical JSON for every supported type, in the forms the codec documents; and
the lab's users and products keep exactly the bytes keyspace.py serves today."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import random
import struct
from collections.abc import Iterator
from typing import Any

import pytest

from cachetail.codec import RowCodec, load_columns
from support.codec import SCHEMA, Image, binlog_images, connect, fresh_schema, position
from support.stack import Stack

FSPS = range(7)
COLUMNS: list[tuple[str, str]] = [
    ("ti", "TINYINT"), ("tu", "TINYINT UNSIGNED"), ("si", "SMALLINT"), ("su", "SMALLINT UNSIGNED"),
    ("mi", "MEDIUMINT"), ("mu", "MEDIUMINT UNSIGNED"), ("i", "INT"), ("iu", "INT UNSIGNED"),
    ("bi", "BIGINT"), ("bu", "BIGINT UNSIGNED"), ("bool", "BOOLEAN"),
    ("de", "DECIMAL(10,2)"), ("dw", "DECIMAL(65,30)"), ("dz", "DECIMAL(65,0) UNSIGNED"),
    ("f", "FLOAT"), ("d", "DOUBLE"), ("dt", "DATE"), ("yr", "YEAR"),
    *[(f"tm{p}", f"TIME({p})") for p in FSPS],
    *[(f"dtm{p}", f"DATETIME({p})") for p in FSPS],
    *[(f"ts{p}", f"TIMESTAMP({p}) NULL") for p in FSPS],
    ("c", "CHAR(10)"), ("cw", "CHAR(100)"), ("vc", "VARCHAR(100)"), ("tx", "TEXT"),
    ("lc", "CHAR(10) CHARACTER SET latin1"), ("lv", "VARCHAR(300) CHARACTER SET latin1"),
    ("lt", "TEXT CHARACTER SET latin1"), ("u3", "VARCHAR(50) CHARACTER SET utf8mb3"),
    ("a7", "VARCHAR(200) CHARACTER SET ascii"),
    ("bn", "BINARY(4)"), ("u16", "BINARY(16)"), ("vb", "VARBINARY(300)"), ("bl", "BLOB"), ("lb", "LONGBLOB"),
    ("j", "JSON"), ("e", "ENUM('a','b','é','x y','it''s')"), ("s", "SET('x','y','z','é','a b')"),
    ("sn", "SET('m','n') NOT NULL DEFAULT ''"), ("sl", "SET('p','q') CHARACTER SET latin1"),
    ("b1", "BIT(1)"), ("b64", "BIT(64)"), ("b10", "BIT(10)"),
]
NAMES = [name for name, _ in COLUMNS]
TEXT_64K = "x" * 65531 + "🚀"  # 65,535 bytes: a full TEXT


def _frac(p: int, digits: str) -> str:
    return "." + digits[:p] if p else ""


def _per_fsp(prefix: str, base: str, digits: str | None) -> dict[str, str]:
    """One value per fsp; ``digits`` None: the smallest fraction of each (.1, .01, ...)."""
    return {f"{prefix}{p}": base + _frac(p, digits or "0" * (p - 1) + "1") for p in FSPS}


MAX: dict[str, Any] = {
    "ti": 127, "tu": 255, "si": 32767, "su": 65535, "mi": 8388607, "mu": 16777215,
    "i": 2147483647, "iu": 4294967295, "bi": 9223372036854775807, "bu": 18446744073709551615, "bool": 1,
    "de": "99999999.99", "dw": "9" * 35 + "." + "9" * 30, "dz": "9" * 65,
    "f": 3.4028234663852886e38, "d": 1.7976931348623157e308, "dt": "9999-12-31", "yr": 2155,
    **_per_fsp("tm", "838:59:59", "999999"), **_per_fsp("dtm", "9999-12-31 23:59:59", "999999"),
    **_per_fsp("ts", "2038-01-19 03:14:07", "999999"),
    "c": "ab  ", "cw": "é" * 98 + "🚀 ", "vc": "héllo 🚀 𝄞 👩‍👩‍👧 ", "tx": TEXT_64K, "lc": b"\xe9\xff\x80\x81 ",
    "lv": bytes(range(0x80, 0x100)), "lt": bytes(range(1, 0x100)), "u3": "ÄÖ€ – ☃",
    "a7": "".join(map(chr, range(1, 128))),
    "bn": b"a\x00\x00\x00", "u16": bytes.fromhex("00112233445566778899aabbccddee00"),
    "vb": bytes(range(256)), "bl": bytes(range(256)) * 4, "lb": bytes(range(255, -1, -1)),
    "j": '{"b": [1, 2.50, -0.0, 1e400, 12345678901234567890, true, false, null],'
         ' "a": "é🚀\\u00e9\\n\\"", "nested": {"x": {"y": [[], {}]}}, "a": 2}',
    "e": "it's", "s": "x,z,é", "sn": "m,n", "sl": "p,q", "b1": 1, "b64": 18446744073709551615, "b10": 1023,
}
MIN: dict[str, Any] = {
    "ti": -128, "tu": 0, "si": -32768, "su": 0, "mi": -8388608, "mu": 0, "i": -2147483648, "iu": 0,
    "bi": -9223372036854775808, "bu": 0, "bool": 0,
    "de": "-99999999.99", "dw": "-" + "9" * 35 + "." + "9" * 30, "dz": "0",
    "f": 1.401298464324817e-45, "d": 5e-324, "dt": "1000-01-01", "yr": 1901,
    **_per_fsp("tm", "-838:59:59", "999999"), **_per_fsp("dtm", "1000-01-01 00:00:00", None),
    **_per_fsp("ts", "1970-01-01 00:00:01", None),
    "c": "", "vc": "", "tx": "", "lc": b"", "lv": b"", "lt": b"", "u3": "", "a7": "",
    "bn": bytes(4), "u16": bytes(16), "vb": b"", "bl": b"", "lb": b"",
    "j": '"just a string"', "e": "a", "s": "", "sn": "", "sl": "", "b1": 0, "b64": 0, "b10": 0,
}
AWKWARD: dict[str, Any] = {
    "ti": -1, "tu": 1, "si": -1, "su": 1, "mi": -1, "mu": 1, "i": -1, "iu": 1, "bi": -1,
    "bu": 9223372036854775808, "bool": 0, "de": "-0.01", "dw": "0." + "0" * 29 + "1", "dz": "1",
    "f": 0.1, "d": 0.1 + 0.2, "dt": "2024-02-29", "yr": 2000,
    **_per_fsp("tm", "-00:00:00", None), "tm0": "-00:00:01",
    **_per_fsp("dtm", "2024-02-29 12:34:56", "123456"), **_per_fsp("ts", "2024-01-01 00:42:00", "500000"),
    "c": "ABC", "vc": ":{}%/ a\\b\"'\t", "tx": "multi\nline\r\n\u2028\u2029\x00\x1f", "lc": b"\x80",
    "lv": b"\x81\x8d\x8f\x90\x9d", "lt": b"caf\xe9", "u3": "BMP ☃", "a7": "plain",
    "bn": b"\x00\x00\x00\x01", "u16": bytes(range(1, 17)), "vb": b"\x00", "bl": b"\x00\xff", "lb": b"y" * 70000,
    "j": '[1, "two", {"3": [4.0e+10, -0]}, "\\ud83d\\ude80", "\\u0000"]',
    "e": "é", "s": "a b,y", "sn": "n", "sl": "q", "b1": 1, "b64": 1 << 63, "b10": 512,
}
ZERO: dict[str, Any] = {  # written with sql_mode '' (MySQL's error ENUM value needs it)
    "dt": "0000-00-00", **{f"dtm{p}": "0000-00-00 00:00:00" for p in FSPS},
    **{f"ts{p}": "0000-00-00 00:00:00" for p in FSPS}, "dtm3": "2024-00-00 00:00:00", "yr": 0,
    "e": "", "f": -0.0, "d": -0.0, "de": "0", "sn": "",
}
FLOATS = [(16777217.0, 9007199254740993.0), (3.14159274, 1e23), (1.17549435e-38, 2.2250738585072014e-308),
          (123456.789, 123456789012345678.0), (-2.5, -1.5e-300), (1e-10, 0.1), (7.038531e-26, 1 / 3),
          (-3.4028234663852886e38, -1.7976931348623157e308)]
TIMES = ["-12:00:00.000001", "-00:00:00.5", "-00:59:59.5", "-00:00:00.999999", "-837:59:59.000001",
         "00:00:00.000001", "-01:00:00", "-838:59:58.999999"]
NULLS: dict[str, Any] = {"sn": ""}


def rows() -> list[dict[str, Any]]:
    """Every row, by id: the edge rows, then float/double and TIME(6) pairs, then NULLs."""
    out = [MAX, MIN, AWKWARD, ZERO]
    out += [{"f": f, "d": d, "tm6": t} for (f, d), t in zip(FLOATS, TIMES, strict=True)]
    out.append(NULLS)
    return [{"id": i + 1, **{n: r.get(n) for n in NAMES}, "sn": r.get("sn", "")} for i, r in enumerate(out)]


@pytest.fixture(scope="module")
def types_table(single_stack: Stack) -> Iterator[tuple[Any, RowCodec]]:
    conn = fresh_schema(single_stack.mariadb)
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE types (id INT NOT NULL PRIMARY KEY, "
                    f"{', '.join(f'`{n}` {t}' for n, t in COLUMNS)})")
    codec = RowCodec([c for c in load_columns(conn, "types") if c.name != "id"])
    yield conn, codec
    conn.close()
    single_stack.mariadb.query(f"DROP DATABASE {SCHEMA}")


def _write(conn: Any, sql: str, params: list[tuple[Any, ...]]) -> None:
    with conn.cursor() as cur:
        cur.execute("SET SESSION sql_mode = ''")  # for the zero dates and ENUM's error value
        cur.executemany(sql, params)
        cur.execute("SET SESSION sql_mode = DEFAULT")


def _cold(conn: Any, codec: RowCodec) -> dict[int, bytes]:
    with conn.cursor() as cur:
        cur.execute(f"SELECT id, {codec.select_list()} FROM types ORDER BY id")
        return {r["id"]: codec.from_select(r) for r in cur.fetchall()}


def fields(text: str) -> dict[str, str]:
    """The exact JSON text of each top-level field of a codec object, in order."""
    decoder = json.JSONDecoder()
    assert text[0] == "{" and text[-1] == "}", text[:80]
    out: dict[str, str] = {}
    i = 1
    while text[i] != "}":
        key, i = decoder.raw_decode(text, i)
        assert text[i] == ":" and key not in out
        _, end = decoder.raw_decode(text, i + 1)
        out[key], i = text[i + 1:end], end
        i += text[i] == ","
    return out


@pytest.fixture(scope="module")
def written(types_table: tuple[Any, RowCodec], single_stack: Stack) -> dict[str, Any]:
    """Insert every row, then UPDATE each to the next row's values; the cold bytes after
    each step and every row image in between."""
    conn, codec = types_table
    data = rows()
    columns = ", ".join(f"`{n}`" for n in NAMES)
    begin = position(conn)
    _write(conn, f"INSERT INTO types (id, {columns}) VALUES (%s, {', '.join(['%s'] * len(NAMES))})",
           [(r["id"], *(r[n] for n in NAMES)) for r in data])
    inserted = _cold(conn, codec)
    rotated = data[1:] + data[:1]
    _write(conn, f"UPDATE types SET {', '.join(f'`{n}` = %s' for n in NAMES)} WHERE id = %s",
           [(*(new[n] for n in NAMES), old["id"]) for old, new in zip(data, rotated, strict=True)])
    updated = _cold(conn, codec)
    images = binlog_images(single_stack.mariadb, begin, ["types"])
    return {"inserted": inserted, "updated": updated, "images": images, "rows": data}


def test_the_database_holds_the_edge_values(types_table: tuple[Any, RowCodec], written: dict[str, Any]
                                            ) -> None:
    conn, _ = types_table
    with conn.cursor() as cur:
        # after the rotation, MAX's values sit in the last row, MIN's in the first
        cur.execute("SELECT HEX(lv) AS lv, HEX(lt) AS lt, HEX(vb) AS vb, OCTET_LENGTH(tx) AS tx,"
                    " HEX(lc) AS lc, HEX(bn) AS bn, HEX(u16) AS u16 FROM types ORDER BY id DESC LIMIT 1")
        row = cur.fetchone()
    assert row["lv"] == bytes(range(0x80, 0x100)).hex().upper()
    assert row["lt"] == bytes(range(1, 0x100)).hex().upper()
    assert row["vb"] == bytes(range(256)).hex().upper()
    assert row["tx"] == 65535
    assert (row["lc"], row["bn"], row["u16"]) == ("E9FF8081", "61000000", "00112233445566778899AABBCCDDEE00")


def _by_id(images: list[Image], kind: str) -> dict[int, Image]:
    return {i.values["id"]: i for i in images if i.kind == kind}


def test_insert_images_give_the_cold_bytes(types_table: tuple[Any, RowCodec], written: dict[str, Any]) -> None:
    _, codec = types_table
    images = _by_id(written["images"], "insert")
    assert sorted(images) == sorted(written["inserted"]) and len(images) == len(rows())
    for row_id, cold in written["inserted"].items():
        image = images[row_id]
        assert codec.from_binlog(image.values, image.none_sources) == cold, f"row {row_id}"


def test_update_images_give_the_cold_bytes_before_and_after(types_table: tuple[Any, RowCodec],
                                                            written: dict[str, Any]) -> None:
    _, codec = types_table
    for kind, cold_bytes in (("before", written["inserted"]), ("after", written["updated"])):
        images = _by_id(written["images"], kind)
        assert sorted(images) == sorted(cold_bytes)
        for row_id, cold in cold_bytes.items():
            image = images[row_id]
            assert codec.from_binlog(image.values, image.none_sources) == cold, f"{kind} row {row_id}"
    assert written["inserted"] != written["updated"]


def test_list_forms_are_the_objects_in_an_array(types_table: tuple[Any, RowCodec], written: dict[str, Any]
                                                ) -> None:
    conn, codec = types_table
    with conn.cursor() as cur:
        cur.execute(f"SELECT {codec.select_list()} FROM types ORDER BY id")
        cold = codec.list_from_select(cur.fetchall())
    after = sorted((i for i in written["images"] if i.kind == "after"), key=lambda i: i.values["id"])
    hot = codec.list_from_binlog([i.values for i in after], [i.none_sources for i in after])
    assert cold == hot == b"[" + b",".join(written["updated"][k] for k in sorted(written["updated"])) + b"]"


GOLDEN: dict[int, dict[str, str]] = {
    1: {"bi": "9223372036854775807", "bu": "18446744073709551615", "mu": "16777215", "bool": "1",
        "de": '"99999999.99"', "dw": '"' + "9" * 35 + "." + "9" * 30 + '"', "dz": '"' + "9" * 65 + '"',
        "f": "3.4028235e+38", "d": "1.7976931348623157e+308", "dt": '"9999-12-31"', "yr": "2155",
        "tm0": '"838:59:59"', "tm3": '"838:59:59.999"', "tm6": '"838:59:59.999999"',
        "dtm0": '"9999-12-31T23:59:59"', "dtm1": '"9999-12-31T23:59:59.9"',
        "ts0": '"2038-01-19T03:14:07Z"', "ts6": '"2038-01-19T03:14:07.999999Z"',
        "c": '"ab"', "cw": '"' + "é" * 98 + '🚀"', "vc": '"héllo 🚀 𝄞 👩‍👩‍👧 "', "lc": '"éÿ€\u0081"',
        "lv": '"' + bytes(range(0x80, 0x100)).decode("cp1252", errors="surrogateescape")
        .replace("\udc81", "\x81").replace("\udc8d", "\x8d").replace("\udc8f", "\x8f")
        .replace("\udc90", "\x90").replace("\udc9d", "\x9d") + '"',
        "bn": '"YQAAAA=="', "u16": '"00112233-4455-6677-8899-aabbccddee00"',
        "vb": '"' + __import__("base64").b64encode(bytes(range(256))).decode() + '"',
        "j": '{"b":[1,2.50,-0.0,1e400,12345678901234567890,true,false,null],'
             '"a":"é🚀é\\n\\"","nested":{"x":{"y":[[],{}]}},"a":2}',
        "e": '"it\'s"', "s": '["x","z","é"]', "sn": '["m","n"]', "sl": '["p","q"]',
        "b1": "1", "b64": "18446744073709551615", "b10": "1023"},
    2: {"ti": "-128", "bi": "-9223372036854775808", "de": '"-99999999.99"', "dz": '"0"',
        "f": "1e-45", "d": "5e-324", "tm0": '"-838:59:59"', "tm2": '"-838:59:59.99"',
        "dtm6": '"1000-01-01T00:00:00.000001"', "ts0": '"1970-01-01T00:00:01Z"',
        "ts4": '"1970-01-01T00:00:01.0001Z"',
        "c": '""', "lv": '""', "bn": '"AAAAAA=="', "u16": '"00000000-0000-0000-0000-000000000000"',
        "vb": '""', "j": '"just a string"', "s": "[]", "sn": "[]", "b64": "0", "yr": "1901"},
    3: {"bu": "9223372036854775808", "de": '"-0.01"', "dw": '"0.' + "0" * 29 + '1"', "f": "0.1",
        "d": "0.30000000000000004", "tm0": '"-00:00:01"', "tm1": '"-00:00:00.1"', "tm3": '"-00:00:00.001"',
        "tm6": '"-00:00:00.000001"', "dtm2": '"2024-02-29T12:34:56.12"', "ts1": '"2024-01-01T00:42:00.5Z"',
        "ts3": '"2024-01-01T00:42:00.500Z"', "vc": '":{}%/ a\\\\b\\"\'\\t"',
        "tx": '"multi\\nline\\r\\n\u2028\u2029\\u0000\\u001f"', "lv": '"\x81\x8d\x8f\x90\x9d"',
        "lt": '"café"', "u16": '"01020304-0506-0708-090a-0b0c0d0e0f10"', "vb": '"AA=="',
        "j": '[1,"two",{"3":[4.0e+10,-0]},"🚀","\\u0000"]', "s": '["y","a b"]', "b64": str(1 << 63),
        "b10": "512"},
    4: {"dt": "null", "dtm0": "null", "dtm3": "null", "dtm6": "null", "ts0": "null", "ts6": "null",
        "yr": "0", "e": '""', "f": "0.0", "d": "0.0", "de": '"0.00"', "sn": "[]", "s": "null", "tx": "null"},
    5: {"f": "16777216.0", "d": "9007199254740992.0", "tm6": '"-12:00:00.000001"'},
    6: {"f": "3.1415927", "d": "1e+23", "tm6": '"-00:00:00.500000"'},
    7: {"f": "1.1754944e-38", "d": "2.2250738585072014e-308", "tm6": '"-00:59:59.500000"'},
    8: {"f": "123456.79", "d": "1.2345678901234568e+17", "tm6": '"-00:00:00.999999"'},
    9: {"f": "-2.5", "d": "-1.5e-300", "tm6": '"-837:59:59.000001"'},
    10: {"f": "1e-10", "d": "0.1", "tm6": '"00:00:00.000001"'},
    11: {"f": "7.0385313e-26", "d": "0.3333333333333333", "tm6": '"-01:00:00.000000"'},
    12: {"f": "-3.4028235e+38", "d": "-1.7976931348623157e+308", "tm6": '"-838:59:58.999999"'},
    13: {n: "null" for n in NAMES if n != "sn"},
}


@pytest.mark.parametrize("row_id", sorted(GOLDEN))
def test_cold_bytes_have_the_documented_forms(written: dict[str, Any], row_id: int) -> None:
    found = fields(written["inserted"][row_id].decode("utf-8"))
    assert list(found) == NAMES
    for name, expected in GOLDEN[row_id].items():
        assert found[name] == expected, f"row {row_id} {name}"
    if row_id == 1:
        assert found["tx"] == '"' + TEXT_64K + '"'


# --------------------------------------------------------------- the lab's bytes

@pytest.fixture(scope="module")
def lab_copy(single_stack: Stack, types_table: tuple[Any, RowCodec]) -> Iterator[Any]:
    """users and products copied from cachelab into the codec schema (their writes stay here)."""
    conn, _ = types_table
    with conn.cursor() as cur:
        for table, count in (("users", 500), ("products", 300)):
            cur.execute(f"CREATE TABLE {table} LIKE cachelab.{table}")
            cur.execute(f"INSERT INTO {table} SELECT * FROM cachelab.{table} ORDER BY id LIMIT {count}")
    yield conn


# What the lab served before its tables became a declaration (cachetail/keyspace.py until
# then): the reference the codec must keep matching, byte for byte.
USER_COLUMNS = ("id", "username", "email", "full_name", "created_at", "updated_at")
PRODUCT_COLUMNS = ("id", "name", "description", "price", "stock", "category", "created_at", "updated_at")


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.isoformat(timespec="microseconds" if value.microsecond else "seconds") + "Z"
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    return value


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def serialize_user(row: Any) -> bytes:
    return _dumps({name: _json_value(row[name]) for name in USER_COLUMNS})


def serialize_products(rows: Any) -> bytes:
    return _dumps([{name: _json_value(row[name]) for name in PRODUCT_COLUMNS} for row in rows])


def _lab_codec(conn: Any, table: str, served: tuple[str, ...]) -> RowCodec:
    by_name = {c.name: c for c in load_columns(conn, table)}
    return RowCodec([by_name[n] for n in served])


def test_users_and_products_keep_the_bytes_served_today(single_stack: Stack, lab_copy: Any) -> None:
    conn = connect(single_stack.mariadb, database="cachelab")
    try:
        users = _lab_codec(conn, "users", USER_COLUMNS)
        products = _lab_codec(conn, "products", PRODUCT_COLUMNS)
        with conn.cursor() as cur:
            cur.execute(f"SELECT {users.select_list()} FROM users ORDER BY id")
            user_rows = cur.fetchall()
            cur.execute(f"SELECT {products.select_list()} FROM products ORDER BY id")
            product_rows = cur.fetchall()
    finally:
        conn.close()
    assert len(user_rows) >= 10_000 and len(product_rows) >= 1_000
    for row in user_rows:
        assert users.from_select(row) == serialize_user(row)
    assert products.list_from_select(product_rows) == serialize_products(product_rows)
    assert users.from_select(user_rows[41]) == (
        b'{"id":42,"username":"user00042","email":"user00042@example.com","full_name":"Margaret Dijkstra",'
        b'"created_at":"2024-01-01T00:42:00Z","updated_at":"2024-01-01T00:42:00Z"}')


def test_lab_refreshes_from_the_binlog_keep_the_bytes_served_today(single_stack: Stack, lab_copy: Any) -> None:
    conn = lab_copy
    users = _lab_codec(conn, "users", USER_COLUMNS)
    products = _lab_codec(conn, "products", PRODUCT_COLUMNS)
    begin = position(conn)
    with conn.cursor() as cur:
        cur.execute("UPDATE users SET full_name = CONCAT(full_name, ' Zoë 🚀'), updated_at = updated_at"
                    " + INTERVAL 1 SECOND WHERE id <= 300")
        cur.execute("UPDATE products SET description = IF(id % 3 = 0, NULL, CONCAT(description, ' é')),"
                    " price = price + 0.01, stock = stock - 600 WHERE id <= 200")
        cur.execute(f"SELECT {users.select_list()} FROM users WHERE id <= 300 ORDER BY id")
        cold_users = {r["id"]: r for r in cur.fetchall()}
        cur.execute(f"SELECT {products.select_list()} FROM products WHERE id <= 200 ORDER BY id")
        cold_products = {r["id"]: r for r in cur.fetchall()}
    images = binlog_images(single_stack.mariadb, begin, ["users", "products"])
    after = {(i.table, i.values["id"]): i.values for i in images if i.kind == "after"}
    assert len(after) == 500
    for row_id, row in cold_users.items():
        image = after[("users", row_id)]
        assert users.from_binlog(image) == serialize_user(image) == users.from_select(row)
    for row_id, row in cold_products.items():
        image = after[("products", row_id)]
        assert products.from_binlog(image) == serialize_products([image])[1:-1]
        assert products.from_binlog(image) == products.from_select(row)
    assert any(row["description"] is None for row in cold_products.values())
    assert any(row["stock"] < 0 for row in cold_products.values())


def test_random_floats_and_doubles_come_back_exact_on_both_paths(single_stack: Stack,
                                                                 types_table: tuple[Any, RowCodec]) -> None:
    """The text protocol is exact for DOUBLE (MariaDB prints the shortest round-trip text) and,
    cast to DOUBLE, for FLOAT; the binlog holds the binary values."""
    conn, _ = types_table
    rnd = random.Random(7)
    pairs: list[tuple[float, float]] = []
    while len(pairs) < 2000:
        f = struct.unpack("<f", struct.pack("<I", rnd.getrandbits(32)))[0]
        d = struct.unpack("<d", struct.pack("<Q", rnd.getrandbits(64)))[0]
        if math.isfinite(f) and math.isfinite(d):
            pairs.append((f, d))
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE numbers (id INT NOT NULL PRIMARY KEY, f FLOAT NOT NULL, d DOUBLE NOT NULL)")
        codec = RowCodec(load_columns(conn, "numbers"))
        begin = position(conn)
        cur.executemany("INSERT INTO numbers VALUES (%s, %s, %s)", [(i, f, d) for i, (f, d) in enumerate(pairs)])
        cur.execute(f"SELECT {codec.select_list()} FROM numbers ORDER BY id")
        cold = [codec.from_select(r) for r in cur.fetchall()]
    hot = [codec.from_binlog(i.values) for i in binlog_images(single_stack.mariadb, begin, ["numbers"])]
    assert cold == hot
    for (f, d), text in zip(pairs, cold, strict=True):
        found = json.loads(text)
        assert struct.pack("<f", found["f"]) == struct.pack("<f", f) and found["d"] == (d or 0.0)
