"""Metrics of the invalidator worker (one process, its own /metrics port)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from metrics import LATENCY_BUCKETS_S

NAMESPACE = "cachetail_invalidator"

ROW_EVENTS = Counter(
    "row_events",
    "Binlog row events seen, by table (users, products, other) and operation.",
    ["table", "operation"],
    namespace=NAMESPACE,
)
KEYS = Counter(
    "keys",
    "Redis keys acted on, by action (deleted, refreshed, generation_bumped, cleared).",
    ["action"],
    namespace=NAMESPACE,
)
TRANSACTIONS = Counter(
    "transactions",
    "Committed transactions applied to Redis (acknowledged) and the position saved.",
    namespace=NAMESPACE,
)
SECONDS_BEHIND = Gauge(
    "seconds_behind",
    "Seconds between the newest event applied and now (0 when caught up and quiet).",
    namespace=NAMESPACE,
)
COMMIT_TO_APPLIED_SECONDS = Histogram(
    "commit_to_applied_seconds",
    "Per transaction: from the commit's binlog timestamp (whole seconds, so up to 1 s high)"
    " to Redis acknowledging its keys.",
    namespace=NAMESPACE,
    buckets=LATENCY_BUCKETS_S,
)
RECEIVED_TO_APPLIED_SECONDS = Histogram(
    "received_to_applied_seconds",
    "Per transaction: from the worker receiving its commit (XID) event to Redis acknowledging"
    " its keys, by the worker's wall clock (the binlog timestamp has 1 s resolution).",
    namespace=NAMESPACE,
    buckets=LATENCY_BUCKETS_S,
)
RECONNECTS = Counter(
    "reconnects",
    "Reconnects after a lost connection, by target (mysql, redis).",
    ["target"],
    namespace=NAMESPACE,
)
FULL_INVALIDATIONS = Counter(
    "full_invalidations",
    "Times every owned key was invalidated, by reason (no_position, purged, bad_position,"
    " failover_window).",
    ["reason"],
    namespace=NAMESPACE,
)
POSITION = Gauge(
    "binlog_position",
    "Byte offset of the last applied transaction's end in its binlog file.",
    namespace=NAMESPACE,
)
POSITION_FILE_INDEX = Gauge(
    "binlog_file_index",
    "Numeric suffix of the binlog file of the last applied position.",
    namespace=NAMESPACE,
)
LAST_EVENT_SECONDS = Gauge(
    "last_event_timestamp_seconds",
    "Unix time of the newest binlog event (heartbeats included) the worker received.",
    namespace=NAMESPACE,
)
STREAMING = Gauge(
    "streaming",
    "1 while connected to MySQL and following the binlog, 0 otherwise.",
    namespace=NAMESPACE,
)
LEADER = Gauge(
    "leader",
    "1 while this invalidator holds the leader lease and follows the binlog, 0 as a standby.",
    namespace=NAMESPACE,
)
TAKEOVERS = Counter(
    "takeovers",
    "Times this invalidator acquired the leader lease (its first start included).",
    namespace=NAMESPACE,
)
LEADERSHIP_LOST = Counter(
    "leadership_lost",
    "Times this invalidator lost the leader lease while leading (expired, taken, fenced).",
    namespace=NAMESPACE,
)
REPLAYS = Counter(
    "replays",
    "Times the worker re-applied a window of the binlog, by reason (failover: a Redis Cluster"
    " primary was replaced and may have lost acknowledged writes).",
    ["reason"],
    namespace=NAMESPACE,
)
