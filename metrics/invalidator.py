"""Metrics of the invalidator worker (one process, its own /metrics port)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from invalidator.unsupported import NAMES as UNSUPPORTED_NAMES
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
    "Times every owned key was invalidated, by reason: no_position, purged (the binlog the"
    " worker needs is gone), bad_position (this server cannot serve the saved offset and no"
    " GTID state is known), source_changed (another server and no GTID state known),"
    " diverged (the server lacks transactions the worker applied, or has errant ones),"
    " gtid_unavailable (GTIDs off on the new server), unknown (an unclassified binlog error),"
    " failover_window (a Redis failover outside the replay window), unsupported_event (past a"
    " binlog event the worker cannot read, once the server's settings were right again).",
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
    "Unix time of the newest binlog event (heartbeats included) the worker received; the"
    " server's fake rotate at each connect does not count.",
    namespace=NAMESPACE,
)
STREAMING = Gauge(
    "streaming",
    "1 while following the binlog (a real event or heartbeat received since the last"
    " connect), 0 otherwise.",
    namespace=NAMESPACE,
)
FOLLOW_LAG_SECONDS = Gauge(
    "follow_lag_seconds",
    "Seconds since the worker last had applied everything the MySQL server had written, as"
    " the server itself reports its binlog end once a second; grows while the server's"
    " position moves on without the worker (reconnect loops, a failover it cannot follow).",
    namespace=NAMESPACE,
)
CONSECUTIVE_FAILURES = Gauge(
    "consecutive_failures",
    "Failed attempts to follow the binlog since the last real progress (a transaction"
    " applied or a heartbeat at the server's end); 0 while following.",
    namespace=NAMESPACE,
)
STREAM_ERRORS = Counter(
    "stream_errors",
    "Failed connects and broken binlog streams, by kind: connection, access_denied,"
    " server_changed, server_id_in_use, file_missing, bad_position, gtid_purged, diverged,"
    " gtid_unavailable, event_too_big, config, unsupported_event, unknown_1236, server_error,"
    " unexpected.",
    ["kind"],
    namespace=NAMESPACE,
)
UNSUPPORTED_EVENTS = Counter(
    "unsupported_events",
    "Binlog events that may carry changes and that the worker cannot read, by event_type (the"
    " MySQL/MariaDB type name, e.g. TRANSACTION_PAYLOAD_EVENT, PARTIAL_UPDATE_ROWS_EVENT,"
    " UPDATE_ROWS_COMPRESSED_EVENT_V1; unknown): following stopped before each.",
    ["event_type"],
    namespace=NAMESPACE,
)
for _name in UNSUPPORTED_NAMES:  # every series exists from the start: increase() sees the first
    UNSUPPORTED_EVENTS.labels(_name)
RESUMES = Counter(
    "resumes",
    "Binlog streams opened, by how the start was named: position (file and offset, on the"
    " server they belong to) or gtid (the GTID state, on another server).",
    ["how"],
    namespace=NAMESPACE,
)
SOURCE_SERVER_ID = Gauge(
    "source_server_id",
    "@@server_id of the MySQL server the worker follows (changes on a database failover).",
    namespace=NAMESPACE,
)
SOURCE_CHANGES = Counter(
    "source_changes",
    "Times the worker started following another MySQL server than before (a failover).",
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

# The consistency auditor (invalidator/audit.py), in the leader.  These names are fixed:
# the recording rule, the alert and the dashboard use them.
AUDIT_CHECKS = Counter(
    "audit_checks",
    "Cached keys compared with what a cold read from MySQL would store now, by kind (invalidation:"
    " a key an applied transaction touched, checked AUDIT_DELAY_S later; sample: keys swept by"
    " SCAN) and result (consistent, inconsistent: confirmed after the worker applied past the"
    " server's position).",
    ["kind", "result"],
    namespace="cachetail",
)
AUDIT_REPAIRS = Counter(
    "audit_repairs",
    "Keys the auditor deleted because they held what MySQL no longer holds.",
    namespace="cachetail",
)
AUDIT_DETECTION_SECONDS = Histogram(
    "audit_detection_seconds",
    "From a change's commit (binlog time, 1 s resolution) to the auditor finding a cached value"
    " older than it (invalidation checks).",
    namespace="cachetail",
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 300, 3600),
)
AUDIT_SKIPPED = Counter(
    "audit_skipped",
    "Checks not made, by reason: unnamed (not a key of the declaration, or a weighted list variant"
    " with an empty page), behind (the worker did not pass the server's position in time),"
    " unavailable (Redis or MySQL failed).",
    ["reason"],
    namespace="cachetail",
)
