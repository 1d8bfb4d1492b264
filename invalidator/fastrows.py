"""The compiled row walk (``invalidator/_rowwalk.c``) for the tables it serves, and when.

The pure-Python path (:mod:`invalidator.rowparse` then :meth:`TableRules.apply_rows`) costs
~2.5 µs a row of a multi-row event, twice what MariaDB's own C decoder spends on the whole
row (docs/invalidator-throughput.md).  The compiled walk does the same work for the common
table: one entity, keyed by one integer column, no list on the table; in refresh mode
every served column an integer, UTF-8 text, TIMESTAMP, DATETIME or DATE.  It writes into
the batch what the Python path writes, in the same order, byte for byte
(``tests/test_invalidator_fastrows.py``), and hands anything unusual back to the Python
path, event by event.  Other tables, and every table where the module was not built, take
the Python path: the generated code stays the reference and the fallback.
"""

from __future__ import annotations

from typing import Any

from pymysqlreplication.constants import FIELD_TYPE
from pymysqlreplication.row_event import RowsEvent

from cachetail.codec_columns import Column
from cachetail.codec_values import json_str

from invalidator.apply import OP_DELETE, write_prefix
from invalidator.rowparse import column_size
from invalidator.rules import TableRules

try:
    from invalidator import _rowwalk
except ImportError:  # not built (no compiler where it was installed): the Python path
    _rowwalk = None  # type: ignore[assignment]  # the module or None: every use checks which

INTEGERS = (FIELD_TYPE.TINY, FIELD_TYPE.SHORT, FIELD_TYPE.INT24, FIELD_TYPE.LONG, FIELD_TYPE.LONGLONG)
BUILT: bool = _rowwalk is not None
OPERATIONS = {"insert": _rowwalk.INSERT, "update": _rowwalk.UPDATE, "delete": _rowwalk.DELETE} if BUILT else {}
enabled = BUILT  # benchmarks compare both paths by turning this off


def available() -> bool:
    return BUILT


def describe() -> str:
    """For the start-up log and ``--check``."""
    if not BUILT:
        return "pure Python (the compiled row walk invalidator._rowwalk was not built)"
    return "compiled" if enabled else "pure Python (compiled row walk turned off)"


def _kind(served: Column | None, binlog: Any) -> int | None:
    """How the compiled walk writes this column's value; None: it cannot (the Python path)."""
    w = _rowwalk
    t = binlog.type
    if served is None:
        return w.SKIP
    if served.integer_bits and t in INTEGERS:
        return w.INT
    if served.is_text and not served.is_json and served.data_type not in ("enum", "set"):
        has_length = t == FIELD_TYPE.BLOB or (t in (FIELD_TYPE.VARCHAR, FIELD_TYPE.STRING)
                                              and hasattr(binlog, "max_length"))
        name = binlog.character_set_name
        if has_length and name is not None and RowsEvent.charset_to_encoding(name) == "utf8":
            return w.UTF8
        return None
    temporal = {"timestamp": FIELD_TYPE.TIMESTAMP2, "datetime": FIELD_TYPE.DATETIME2, "date": FIELD_TYPE.DATE}
    if temporal.get(served.data_type) == t and (t == FIELD_TYPE.DATE or (served.fsp or 0) == binlog.fsp):
        return {FIELD_TYPE.TIMESTAMP2: w.TIMESTAMP2, FIELD_TYPE.DATETIME2: w.DATETIME2, FIELD_TYPE.DATE: w.DATE}[t]
    return None


def build(table_map_columns: Any, rules: TableRules, refresh: bool) -> Any | None:
    """A Plan for this table map and these rules, or None when the Python path must serve."""
    if not BUILT or rules.lists or len(rules.entities) != 1:
        return None
    rule = rules.entities[0]
    entity = rule.entity
    if len(entity.keys.columns) != 1 or not entity.keys.columns[0].integer_bits:
        return None
    names = [c.name for c in table_map_columns]
    key_name = entity.keys.names[0]
    if None in names or key_name not in names or len(names) != len(set(names)):
        return None
    served_by_name = {c.name: c for c in entity.columns} if refresh else {}
    if refresh and (not served_by_name.keys() <= set(names) or any(c.data_type == "set" for c in entity.columns)):
        return None
    specs = []
    for column in table_map_columns:
        size = column_size(column)
        if size is None:
            return None
        served = served_by_name.get(column.name)
        if column.name == key_name:
            kind = _rowwalk.INT if column.type in INTEGERS else None
        else:
            kind = _kind(served, column)
        if kind is None:
            return None
        fsp = (getattr(column, "fsp", 0) or 0) if kind in (_rowwalk.TIMESTAMP2, _rowwalk.DATETIME2) else 0
        specs.append((size[0], size[1], kind, fsp, bool(getattr(column, "unsigned", False))))
    mark = "\x00"
    parts = rules.keyspace.row(rule.tag, mark).split(mark)
    if len(parts) != 2:
        return None
    served_spec: tuple[tuple[int, bytes], ...] = ()
    prefix = None
    if refresh:
        served_spec = tuple((names.index(c.name), (json_str(c.name) + ":").encode("utf-8")) for c in entity.columns)
        prefix = write_prefix(rule.ttl_s)
    # the op format's pieces, from its owner (see the contract at the top of _rowwalk.c)
    return _rowwalk.Plan(tuple(specs), names.index(key_name), parts[0], parts[1], OP_DELETE, served_spec, prefix)


_plans: dict[tuple[int, int, bool], tuple[Any, TableRules, Any]] = {}


def plan_for(table_map: Any, rules: TableRules, refresh: bool) -> Any | None:
    """The plan of this table map (a DDL brings a new one), built once."""
    if not enabled:
        return None
    cache_key = (id(table_map), id(rules), refresh)
    cached = _plans.get(cache_key)
    if cached is not None and cached[0] is table_map and cached[1] is rules:
        return cached[2]
    built = build(table_map.columns, rules, refresh)
    if len(_plans) > 1000:
        _plans.clear()
    _plans[cache_key] = (table_map, rules, built)
    return built


def apply(plan: Any, ops: dict[str, bytes], operation: str, data: bytes, start: int, end: int) -> bool:
    """Record the rows' effects in ``ops``; False: run the Python path over the whole event."""
    code = OPERATIONS.get(operation)
    return code is not None and bool(plan.apply(data, start, end, code, ops))
