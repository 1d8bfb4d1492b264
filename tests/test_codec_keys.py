"""KeyCodec against a real MariaDB: the key text of a row is the same from a SELECT, from
its binlog images and from the path that spells it; bad path parameters are refused with
a one-line message; the collation trap is closed; unsupported columns are named."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from cachetail.codec import BadKey, KeyCodec, load_columns, unsupported
from cachetail.codec_keys import unsupported_key
from support.codec import SCHEMA, binlog_images, fresh_schema, position
from support.stack import Stack

TABLES = {
    "k3": "a TINYINT NOT NULL, b BIGINT UNSIGNED NOT NULL, c SMALLINT NOT NULL, v INT, PRIMARY KEY (a, b, c)",
    "kv": "name VARCHAR(20) NOT NULL PRIMARY KEY, v INT",
    "ku": "id BINARY(16) NOT NULL PRIMARY KEY, v INT",
    "k2": "customer VARCHAR(10) CHARACTER SET latin1 NOT NULL, order_id INT UNSIGNED NOT NULL, v INT,"
          " PRIMARY KEY (customer, order_id)",
    "kb": "code BINARY(4) NOT NULL, tag VARBINARY(8) NOT NULL, id MEDIUMINT NOT NULL, v INT,"
          " PRIMARY KEY (code, tag, id)",
    "k8": "name VARCHAR(10) CHARACTER SET utf8mb3 NOT NULL PRIMARY KEY",
    "ke": "status ENUM('new', 'sent', 'lost-in-transit') NOT NULL PRIMARY KEY, v INT",
}
KEYS = {"k3": ["a", "b", "c"], "kv": ["name"], "ku": ["id"], "k2": ["customer", "order_id"],
        "kb": ["code", "tag", "id"], "k8": ["name"], "ke": ["status"]}
# path parameters as a client sends them (already %-decoded) -> the key text
SPELLINGS: dict[str, list[tuple[tuple[str, ...], str]]] = {
    "k3": [(("-128", "18446744073709551615", "32767"), "-128:18446744073709551615:32767"),
           (("127", "0", "-32768"), "127:0:-32768"),
           (("0", "9223372036854775808", "0"), "0:9223372036854775808:0")],
    "kv": [(("ABC",), "ABC"),
           (("é🚀:{}%/ a",), "%C3%A9%F0%9F%9A%80%3A%7B%7D%25%2F%20a"),
           (("x~y_z-1.2",), "x~y_z-1.2"),
           (("𝄞 ",), "%F0%9D%84%9E%20")],
    "ku": [(("00112233-4455-6677-8899-AABBCCDDEE00",), "00112233445566778899aabbccddee00"),
           (("ffeeddccbbaa99887766554433221100",), "ffeeddccbbaa99887766554433221100"),
           (("00000000-0000-0000-0000-000000000000",), "0" * 32)],
    "k2": [(("café", "1"), "caf%C3%A9:1"), (("€ÿ", "4294967295"), "%E2%82%AC%C3%BF:4294967295")],
    "kb": [(("61000000", "00", "-8388608"), "61000000:00:-8388608"),
           (("00000000", "FF00", "8388607"), "00000000:ff00:8388607")],
    # an ENUM key: the member, as the row (and the binlog, through the table map) spells it
    "ke": [(("sent",), "sent"), (("lost-in-transit",), "lost-in-transit")],
}


@pytest.fixture(scope="module")
def keys_db(single_stack: Stack) -> Iterator[tuple[Any, dict[str, KeyCodec]]]:
    conn = fresh_schema(single_stack.mariadb)
    with conn.cursor() as cur:
        for table, body in TABLES.items():
            cur.execute(f"CREATE TABLE {table} ({body})")
    codecs = {}
    for table, names in KEYS.items():
        by_name = {c.name: c for c in load_columns(conn, table)}
        codecs[table] = KeyCodec([by_name[n] for n in names])
    yield conn, codecs
    conn.close()
    single_stack.mariadb.query(f"DROP DATABASE {SCHEMA}")


def _select(conn: Any, table: str, codec: KeyCodec, values: tuple[Any, ...]) -> list[dict[str, Any]]:
    with conn.cursor() as cur:
        cur.execute(f"SELECT * FROM {table} WHERE {codec.where()}", values)
        return list(cur.fetchall())


def test_key_texts_agree_from_the_path_a_select_and_the_binlog(single_stack: Stack,
                                                               keys_db: tuple[Any, dict[str, KeyCodec]]) -> None:
    conn, codecs = keys_db
    begin = position(conn)
    with conn.cursor() as cur:
        for table, spellings in SPELLINGS.items():
            codec = codecs[table]
            names = ", ".join(f"`{n}`" for n in codec.names)
            for path, _ in spellings:
                cur.execute(f"INSERT INTO {table} ({names}, v) VALUES ({', '.join(['%s'] * len(path))}, 1)",
                            codec.parse(path))
            cur.execute(f"UPDATE {table} SET v = v + 1")
        cur.execute("UPDATE k3 SET c = c + 1 WHERE a = 0")  # a key change: before and after differ
    images = binlog_images(single_stack.mariadb, begin, list(SPELLINGS))
    expected = {(table, text) for table, spellings in SPELLINGS.items() for _, text in spellings}
    seen = {(i.table, codecs[i.table].text_from_binlog(i.values)) for i in images if i.kind != "after"}
    after = {(i.table, codecs[i.table].text_from_binlog(i.values)) for i in images if i.kind == "after"}
    moved = ("k3", "0:9223372036854775808:0")
    assert seen == expected
    assert after == expected | {("k3", "0:9223372036854775808:1")}
    for table, spellings in SPELLINGS.items():
        codec = codecs[table]
        for path, text in spellings:
            values = codec.parse(path)
            found = _select(conn, table, codec, values)
            if (table, text) == moved:
                assert found == []
                continue
            assert len(found) == 1, (table, path)
            assert codec.text_from_params(values) == codec.text_from_row(found[0]) == text
            assert codec.canonical(values, found[0])


def test_where_and_negative_caching_per_key_type(keys_db: tuple[Any, dict[str, KeyCodec]]) -> None:
    _, codecs = keys_db
    assert codecs["k3"].where() == "`a` = %s AND `b` = %s AND `c` = %s"
    cacheable = {t: c.negatives_cacheable for t, c in codecs.items()}
    # integers and binary: yes; strings (ENUMs too) under the schema's utf8mb4_unicode_ci / latin1_swedish_ci: no
    assert cacheable == {"k3": True, "ku": True, "kb": True, "kv": False, "k2": False, "k8": False, "ke": False}


def test_a_date_filter_spells_a_day_alike_from_the_query_a_select_and_the_binlog(
        single_stack: Stack, keys_db: tuple[Any, dict[str, KeyCodec]]) -> None:
    conn, _ = keys_db
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE kd (id INT NOT NULL PRIMARY KEY, day DATE NULL)")
    (day,) = [replace(c, nullable=False) for c in load_columns(conn, "kd") if c.name == "day"]  # as schema.py
    with pytest.raises(Exception, match="only integers, CHAR, VARCHAR, BINARY, VARBINARY and ENUM can be keys"):
        KeyCodec([day])  # a date filters lists, it keys no entity
    codec = KeyCodec([day], ["expires"], filter=True)
    begin = position(conn)
    with conn.cursor() as cur:
        cur.execute("INSERT INTO kd VALUES (1, %s), (2, '2024-02-29')", codec.parse(["0001-01-01"]))
    images = binlog_images(single_stack.mariadb, begin, ["kd"])
    assert sorted(codec.text_from_binlog(i.values) for i in images) == ["0001-01-01", "2024-02-29"]
    (row,) = _select(conn, "kd", codec, codec.parse(["2024-02-29"]))
    assert codec.text_from_row(row) == codec.text_from_params(codec.parse(["2024-02-29"])) == "2024-02-29"
    for raw, message in (("2024-02-30", "is no day of the calendar"), ("2024-2-1", "must be a date: YYYY-MM-DD"),
                         ("0000-00-00", "is no day of the calendar"), ("20240229", "must be a date"),
                         ("2024-02-29T00:00", "must be a date")):
        with pytest.raises(BadKey, match=f"expires: {message}"):
            codec.parse([raw])


BAD: list[tuple[str, int, str, str]] = [  # table, parameter index, input, message
    ("k3", 0, "128", "a: must be between -128 and 127 (got '128')"),
    ("k3", 0, "-129", "a: must be between -128 and 127 (got '-129')"),
    ("k3", 0, "+1", "a: must be an integer (1 to 20 ASCII digits, optionally after '-') (got '+1')"),
    ("k3", 0, " 1", "a: must be an integer (1 to 20 ASCII digits, optionally after '-') (got ' 1')"),
    ("k3", 0, "1 ", "a: must be an integer (1 to 20 ASCII digits, optionally after '-') (got '1 ')"),
    ("k3", 0, "1_0", "a: must be an integer (1 to 20 ASCII digits, optionally after '-') (got '1_0')"),
    ("k3", 0, "١", "a: must be an integer (1 to 20 ASCII digits, optionally after '-') (got '١')"),
    ("k3", 0, "１", "a: must be an integer (1 to 20 ASCII digits, optionally after '-') (got '１')"),
    ("k3", 0, "", "a: must be an integer (1 to 20 ASCII digits, optionally after '-') (got '')"),
    ("k3", 0, "-", "a: must be an integer (1 to 20 ASCII digits, optionally after '-') (got '-')"),
    ("k3", 0, "0x1", "a: must be an integer (1 to 20 ASCII digits, optionally after '-') (got '0x1')"),
    ("k3", 1, "-1", "b: must be an integer (1 to 20 ASCII digits) (got '-1')"),
    ("k3", 1, "18446744073709551616",
     "b: must be between 0 and 18446744073709551615 (got '18446744073709551616')"),
    ("k3", 1, "1" * 21, "b: must be an integer (1 to 20 ASCII digits) (got '111111111111111111111')"),
    ("kv", 0, "", "name: must not be empty"),
    ("kv", 0, "x" * 21, "name: must be at most 20 characters (got 'xxxxxxxxxxxxxxxxxxxxx')"),
    ("kv", 0, "a\x00b", "name: must not contain control characters (got 'a\\x00b')"),
    ("kv", 0, "a\nb", "name: must not contain control characters (got 'a\\nb')"),
    ("kv", 0, "\x7f", "name: must not contain control characters (got '\\x7f')"),
    ("kv", 0, "\ud800", "name: must not contain control characters (got '\\ud800')"),
    ("k2", 0, "☃", "customer: has characters that latin1 cannot hold (got '☃')"),
    ("k8", 0, "🚀", "name: has characters that utf8mb3 cannot hold (got '🚀')"),
    ("ku", 0, "0011", "id: must be a UUID: 32 hex digits or 8-4-4-4-12 (got '0011')"),
    ("ku", 0, "{00112233-4455-6677-8899-aabbccddee00}",
     "id: must be a UUID: 32 hex digits or 8-4-4-4-12 (got '{00112233-4455-6677-8899-aabbccddee00}')"),
    ("ku", 0, "00112233-4455-6677-8899-aabbccddee0g",
     "id: must be a UUID: 32 hex digits or 8-4-4-4-12 (got '00112233-4455-6677-8899-aabbccddee0g')"),
    ("ku", 0, "0011223-34455-6677-8899-aabbccddee00",
     "id: must be a UUID: 32 hex digits or 8-4-4-4-12 (got '0011223-34455-6677-8899-aabbccddee00')"),
    ("kb", 0, "610000", "code: must be 8 hex digits (got '610000')"),
    ("kb", 0, "6100000", "code: must be 8 hex digits (got '6100000')"),
    ("kb", 0, "zz000000", "code: must be 8 hex digits (got 'zz000000')"),
    ("kb", 1, "", "tag: must be hex, 1 to 8 bytes (got '')"),
    ("kb", 1, "0", "tag: must be hex, 1 to 8 bytes (got '0')"),
    ("kb", 1, "00" * 9, "tag: must be hex, 1 to 8 bytes (got '000000000000000000')"),
]


@pytest.mark.parametrize(("table", "index", "raw", "message"), BAD)
def test_bad_path_parameters_are_refused_with_one_line(keys_db: tuple[Any, dict[str, KeyCodec]], table: str,
                                                      index: int, raw: str, message: str) -> None:
    codec = keys_db[1][table]
    good = list(SPELLINGS.get(table, [(("abc",), "")])[0][0])
    good[index] = raw
    with pytest.raises(BadKey) as caught:
        codec.parse(good)
    assert str(caught.value) == message
    assert caught.value.param == codec.params[index]


def test_a_bad_key_never_echoes_more_than_40_characters(keys_db: tuple[Any, dict[str, KeyCodec]]) -> None:
    codec = keys_db[1]["k3"]
    with pytest.raises(BadKey) as caught:
        codec.parse(["9" * 5000, "0", "0"])
    assert str(caught.value) == ("a: must be an integer (1 to 20 ASCII digits, optionally after '-')"
                                 f" (got '{'9' * 40}'...)")
    with pytest.raises(BadKey, match=r"^a/b/c: expected 3 path parameters$"):
        codec.parse(["1"])


# ------------------------------------------------------------ the collation trap

COLLATIONS = {"cu": "utf8mb4_unicode_ci", "cb": "utf8mb4_bin", "cn": "utf8mb4_nopad_bin"}
FINDS = {  # spelling -> (finds the row 'ABC', may store under its key)
    "cu": {"ABC": (True, True), "abc": (True, False), "ABC ": (True, False), "ÀBC": (True, False)},
    "cb": {"ABC": (True, True), "abc": (False, False), "ABC ": (True, False), "ÀBC": (False, False)},
    "cn": {"ABC": (True, True), "abc": (False, False), "ABC ": (False, False), "ÀBC": (False, False)},
}


def test_the_collation_trap_is_closed(single_stack: Stack, keys_db: tuple[Any, dict[str, KeyCodec]]) -> None:
    conn, _ = keys_db
    with conn.cursor() as cur:
        for table, collation in COLLATIONS.items():
            cur.execute(f"CREATE TABLE {table} (name VARCHAR(10) COLLATE {collation} NOT NULL PRIMARY KEY)")
        cur.execute("CREATE TABLE cint (id INT UNSIGNED NOT NULL PRIMARY KEY)")
    codecs = {t: KeyCodec(load_columns(conn, t)) for t in [*COLLATIONS, "cint"]}
    for table in COLLATIONS:  # before the row exists, a 404 for "abc" would be cached under "abc"...
        assert _select(conn, table, codecs[table], codecs[table].parse(["abc"])) == []
    begin = position(conn)
    with conn.cursor() as cur:
        for table in COLLATIONS:
            cur.execute(f"INSERT INTO {table} VALUES ('ABC')")
        cur.execute("INSERT INTO cint VALUES (7)")
    inserted = {i.table: codecs[i.table].text_from_binlog(i.values)
                for i in binlog_images(single_stack.mariadb, begin, [*COLLATIONS, "cint"])}
    assert inserted == {"cu": "ABC", "cb": "ABC", "cn": "ABC", "cint": "7"}  # ...and the insert deletes "ABC"
    for table, spellings in FINDS.items():
        codec = codecs[table]
        for spelling, (finds, stores) in spellings.items():
            values = codec.parse([spelling])
            found = _select(conn, table, codec, values)
            assert (len(found) == 1) == finds, (table, spelling)
            if found:
                assert codec.canonical(values, found[0]) == stores, (table, spelling)
            if finds and not stores:
                assert codec.text_from_params(values) != inserted[table]
        # a 404 may be cached only where no other spelling can ever find a row
        assert codec.negatives_cacheable == all(f == s for f, s in spellings.values())
    assert [codecs["cu"].negatives_cacheable, codecs["cb"].negatives_cacheable] == [False, False]
    assert codecs["cn"].negatives_cacheable and codecs["cint"].negatives_cacheable
    for spelling in ("7", "007"):
        values = codecs["cint"].parse([spelling])
        row = _select(conn, "cint", codecs["cint"], values)[0]
        assert codecs["cint"].canonical(values, row) and codecs["cint"].text_from_params(values) == "7"


# -------------------------------------------------------------- validation

UNSUPPORTED = {
    "g": ("GEOMETRY", "column 'g' (geometry): type geometry is not supported"),
    "p": ("POINT", "column 'p' (point): type point is not supported"),
    "uu": ("UUID", "column 'uu' (uuid): type uuid is not supported"),
    "i6": ("INET6", "column 'i6' (inet6): type inet6 is not supported"),
    "cy": ("VARCHAR(10) CHARACTER SET cp1251",
           "column 'cy' (varchar(10)): character set cp1251 is not supported"
           " (utf8mb4, utf8mb3, latin1, ascii are)"),
    "le": ("ENUM('a','é') CHARACTER SET latin1",
           "column 'le' (enum('a','é')): non-ASCII ENUM members in latin1: the binlog library decodes"
           " member names as UTF-8"),
}


def test_unsupported_columns_are_named_in_one_line(keys_db: tuple[Any, dict[str, KeyCodec]]) -> None:
    conn, _ = keys_db
    body = ", ".join(f"`{n}` {t}" for n, (t, _) in UNSUPPORTED.items())
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE odd (id INT NOT NULL PRIMARY KEY, j JSON NOT NULL, d DECIMAL(5,2) NOT NULL,"
                    f" n VARCHAR(5) NULL, {body})")
    columns = {c.name: c for c in load_columns(conn, "odd")}
    for name, (_, message) in UNSUPPORTED.items():
        assert unsupported(columns[name]) == message
    assert unsupported(columns["id"]) is None and unsupported(columns["j"]) is None
    assert columns["j"].is_json and not columns["n"].is_json
    assert unsupported_key(columns["d"]) == ("key column 'd' (decimal(5,2)): only integers, CHAR, VARCHAR,"
                                             " BINARY, VARBINARY and ENUM can be keys")
    assert unsupported_key(columns["n"]) == "key column 'n' (varchar(5)): a key column must be NOT NULL"
    assert unsupported_key(columns["id"]) is None
    assert load_columns(conn, "no_such_table") == []
