"""Reading the lab's binlog as the worker does, for the decode tests: the library's images
beside the worker's own (``read_events``), and what the worker follows (``followed_tables``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pymysqlreplication.event import HeartbeatLogEvent
from pymysqlreplication.row_event import RowsEvent, UpdateRowsEvent, WriteRowsEvent

from cachetail.codec import prepare_binlog_event
from invalidator import decode
from invalidator.catalog import Followed, Weights, load_catalog
from invalidator.position import Position
from invalidator.settings import InvalidatorSettings
from invalidator.stream import control_connection, open_stream

NEEDED = frozenset({"id", "username", "full_name", "code", "tiny", "big", "lat", "uid"})
Image = dict[str, Any] | None
Triples = list[tuple[Image, Image, dict[str, str] | None]]


def project(image: Image, names: frozenset[str] | None) -> Image:
    return None if image is None or names is None else {k: v for k, v in image.items() if k in names}


def library_images(event: RowsEvent, after_names: frozenset[str] | None = None) -> Triples:
    """What the library decodes: before projected on NEEDED, after on ``after_names`` (all: None)."""
    prepare_binlog_event(event)
    keep = after_names or frozenset(c.name for c in event.columns)
    sources = None if after_names else keep  # delete mode has no use for them
    if isinstance(event, UpdateRowsEvent):
        return [(project(r["before_values"], NEEDED), project(r["after_values"], keep),
                 project(r["after_none_sources"], sources)) for r in event.rows]
    if isinstance(event, WriteRowsEvent):
        return [(None, project(r["values"], keep), project(r["none_sources"], sources)) for r in event.rows]
    return [(project(r["values"], NEEDED), None, None) for r in event.rows]


def read_events(settings: InvalidatorSettings, begin: tuple[str, int], end: tuple[str, int], fast: bool,
                full: bool = False, table: str = "users") -> list[Triples]:
    stream = open_stream(settings, Position(*begin), tables=(table,))
    out = []
    try:
        for event in stream:
            if isinstance(event, RowsEvent) and event.table == table:
                if fast:
                    triples = decode.images(event, NEEDED & {c.name for c in event.columns}, full_after=full)
                else:
                    triples = library_images(event, None if full else NEEDED)
                assert triples is not None, "the fast path must apply"
                out.append(list(triples))
            if isinstance(event, HeartbeatLogEvent) or (stream.log_file, stream.log_pos) >= end:
                break
    finally:
        stream.close()
    return out


def followed_tables(settings: InvalidatorSettings, refresh: bool
                    ) -> tuple[Followed, Weights, Callable[[Any], bool]]:
    """What the worker follows, its collation weights, and the claim its connection makes."""
    conn = control_connection(settings)
    try:
        followed = Followed(load_catalog(conn, str(settings.config_path), settings.mysql.database),
                            settings.keyspace)
    finally:
        conn.close()
    weights = Weights(lambda: control_connection(settings))

    def claim(table_map: Any) -> bool:
        rules = followed.rules.get(table_map.table)
        return rules is not None and decode.claims(table_map, rules.needed, refresh)

    return followed, weights, claim
