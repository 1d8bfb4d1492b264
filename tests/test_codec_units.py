"""The codec's pure parts: float printing against independent oracles (numpy's Dragon4 and
Python's repr), the TIME correction, member parsing, the latin1 table and error paths."""

from __future__ import annotations

import datetime as dt
import random
import struct
from decimal import Decimal
from typing import Any

import numpy as np
import pytest

from cachetail.codec import CodecError, Column, RowCodec, UnsupportedColumn
from cachetail.codec_columns import encodable, parse_members, prepare_binlog_columns, register_mysql_latin1
from cachetail.codec_floats import float32_text, repr_style
from cachetail.codec_values import library_time_micros


def _float32s(count: int) -> list[float]:
    rnd = random.Random(12)
    out = []
    while len(out) < count:
        value = struct.unpack("<f", struct.pack("<I", rnd.getrandbits(32)))[0]
        if np.isfinite(value) and value != 0:
            out.append(value)
    return out + [struct.unpack("<f", struct.pack("<I", b))[0] for b in (1, 0x7F7FFFFF, 0x00800000, 0x007FFFFF)]


def test_float32_text_is_the_shortest_text_numpy_finds_and_reads_back_exactly() -> None:
    for value in _float32s(20_000):
        text = float32_text(value)
        assert np.float32(text) == np.float32(value), (value, text)
        oracle = np.format_float_scientific(np.float32(value), unique=True)
        assert Decimal(text) == Decimal(oracle.replace(".e", "e")), (value, text, oracle)
        assert repr(float(text)) == text  # laid out as repr() lays out a number of <= 9 digits


def test_repr_style_lays_digits_out_exactly_as_python_repr() -> None:
    rnd = random.Random(5)
    values = [struct.unpack("<d", struct.pack("<Q", rnd.getrandbits(64)))[0] for _ in range(20_000)]
    values += [1e16, 1e15, 123456789012345680.0, 0.0001, 0.00001, 1.5, 100.0, 5e-324, 1.7976931348623157e308]
    for value in (v for v in values if np.isfinite(v) and v != 0):
        sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
        assert isinstance(exponent, int)
        text = "".join(map(str, digits))
        assert repr_style(text, len(digits) + exponent, bool(sign)) == repr(value)


def test_float32_text_refuses_a_value_that_is_no_float32() -> None:
    with pytest.raises(TypeError):
        float32_text(0.1)  # a double: the SELECT must cast FLOAT, never print a rounded text


@pytest.mark.parametrize(("library", "stored"), [
    (-999_000, -1_000), (-1_000, -999_000), (-500_000, -500_000), (-43_200_999_999, -43_200_000_001),
    (-3_017_000_000, -3_017_000_000), (-1_000_000, -1_000_000), (0, 0), (1, 1), (3_599_500_000, 3_599_500_000),
])
def test_the_library_reading_of_a_negative_time_fraction_is_undone(library: int, stored: int) -> None:
    assert library_time_micros(library) == stored
    assert library_time_micros(library_time_micros(library)) == library  # an involution


def test_enum_and_set_members_are_parsed_as_the_server_spells_them() -> None:
    assert parse_members("enum('it''s','a,b','back\\\\slash','é','')") == ("it's", "a,b", "back\\slash", "é", "")
    assert parse_members("set('x y','q''')") == ("x y", "q'")


def test_mysql_latin1_decodes_every_byte_where_cp1252_has_holes() -> None:
    register_mysql_latin1()
    text = bytes(range(256)).decode("cachetail_mysql_latin1")
    assert [hex(ord(text[b])) for b in (0x80, 0x81, 0x8D, 0x8F, 0x90, 0x9D, 0x9F, 0xFF)] == [
        "0x20ac", "0x81", "0x8d", "0x8f", "0x90", "0x9d", "0x178", "0xff"]
    assert text.encode("cachetail_mysql_latin1") == bytes(range(256))
    assert encodable("€ÿ\x81", "latin1") and not encodable("☃", "latin1")
    with pytest.raises(UnicodeDecodeError):
        b"\x81".decode("cp1252")

    class LibraryColumn:
        character_set_name = "cp1252"

    column = LibraryColumn()
    prepare_binlog_columns([column])
    assert column.character_set_name == "cachetail_mysql_latin1"


def _column(name: str, data_type: str, column_type: str, nullable: bool = True, **extra: Any) -> Column:
    fields: dict[str, Any] = {"charset": None, "collation": None, "char_length": None, "precision": None,
                              "scale": None, "fsp": None, **extra}
    return Column(name=name, data_type=data_type, column_type=column_type, nullable=nullable, position=1,
                  **fields)


def test_a_binlog_set_none_is_null_or_empty_only_when_that_is_known() -> None:
    codec = RowCodec([_column("s", "set", "set('a')", charset="utf8mb4", members=("a",)),
                      _column("t", "set", "set('a')", nullable=False, charset="utf8mb4", members=("a",))])
    assert codec.from_binlog({"s": None, "t": None}, {"s": "empty set", "t": "empty set"}) == b'{"s":[],"t":[]}'
    assert codec.from_binlog({"s": None, "t": None}, {"s": "null", "t": "empty set"}) == b'{"s":null,"t":[]}'
    with pytest.raises(CodecError, match="none_sources"):
        codec.from_binlog({"s": None, "t": {"a"}})
    assert codec.from_select({"s": None, "t": ""}) == b'{"s":null,"t":[]}'


def test_codec_errors_name_the_column() -> None:
    codec = RowCodec([_column("when", "time", "time(0)", fsp=0), _column("n", "int", "int(11)")])
    with pytest.raises(CodecError, match="column 'n' is missing"):
        codec.from_select({"when": dt.timedelta(0)})
    with pytest.raises(CodecError, match="column 'when': expected a timedelta"):
        codec.from_select({"when": "12:00:00", "n": 1})
    with pytest.raises(UnsupportedColumn, match="type geometry is not supported"):
        RowCodec([_column("g", "geometry", "geometry")])
    with pytest.raises(UnsupportedColumn, match="binary JSON"):
        RowCodec([_column("j", "json", "json")])
    with pytest.raises(CodecError, match="duplicate"):
        RowCodec([_column("n", "int", "int(11)"), _column("n", "int", "int(11)")])


def test_json_columns_keep_numbers_and_escape_lone_surrogates() -> None:
    codec = RowCodec([_column("j", "longtext", "longtext", charset="utf8mb4", is_json=True)])
    assert codec.from_select({"j": ' { "a" : 1.10 , "b":"\\ud800", "a": [ -0, 1E+2 ] } '}) == (
        b'{"j":{"a":1.10,"b":"\\ud800","a":[-0,1E+2]}}')
    with pytest.raises(CodecError):
        codec.from_binlog({"j": "NaN"})
