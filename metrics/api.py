"""Metrics of the read API (summed over uvicorn workers in multiprocess mode)."""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Gauge, Histogram

from metrics import LATENCY_BUCKETS_S
from metrics.batched import Batch, FlushFirst

NAMESPACE = "cachetail"

# The hot path's updates are batched (metrics/batched.py); this collector, registered before
# every metric below, flushes them first, so a collection never misses one.
HOT = Batch()
REGISTRY.register(FlushFirst(HOT))

CACHE_LOOKUPS = Counter(
    "cache_lookups",
    "Cache lookups by entity and result (hit, miss, bypass).",
    ["entity", "result"],
    namespace=NAMESPACE,
)
CACHE_LOOKUP_SECONDS = Histogram(
    "cache_lookup_duration_seconds",
    "Time to answer a cached read, from the first Redis call to the body, by result.",
    ["entity", "result"],
    namespace=NAMESPACE,
    buckets=LATENCY_BUCKETS_S,
)
CACHE_FILLS = Counter(
    "cache_fills",
    "Outcome of misses: stored (CAS won), stale_prevented (CAS lost to an invalidation),"
    " waited (another fill's value arrived), uncached (answered without storing).",
    ["entity", "result"],
    namespace=NAMESPACE,
)
REDIS_ERRORS = Counter(
    "redis_errors",
    "Redis calls that failed or timed out, by operation; the request was answered from MySQL.",
    ["operation"],
    namespace=NAMESPACE,
)
MYSQL_QUERIES = Counter(
    "mysql_queries",
    "SELECTs sent to MySQL by entity and result (ok, error).",
    ["entity", "result"],
    namespace=NAMESPACE,
)
MYSQL_QUERY_SECONDS = Histogram(
    "mysql_query_duration_seconds",
    "Time of one SELECT including waiting for a pooled connection.",
    ["entity"],
    namespace=NAMESPACE,
    buckets=LATENCY_BUCKETS_S,
)
HTTP_REQUESTS = Counter(
    "http_requests",
    "HTTP requests by route template, method and status code.",
    ["route", "method", "status"],
    namespace=NAMESPACE,
)
HTTP_REQUEST_SECONDS = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency by route template and method.",
    ["route", "method"],
    namespace=NAMESPACE,
    buckets=LATENCY_BUCKETS_S,
)
REDIS_SKIPPED = Counter(
    "redis_skipped",
    "Redis calls not attempted because a recent connection failure opened the circuit"
    " breaker (API_REDIS_BREAKER_S); the request was answered from MySQL.",
    ["operation"],
    namespace=NAMESPACE,
)
# Redis Cluster (api/clusterlean.py): the hot reads' own slot map.
REDIS_REDIRECTS = Counter(
    "redis_redirects",
    "Hot reads that Redis Cluster redirected: moved (the slot has a new primary; the slot"
    " map is read again) or ask (the slot is migrating; followed with ASKING).",
    ["kind"],
    namespace=NAMESPACE,
)
REDIS_TOPOLOGY_LOADS = Counter(
    "redis_topology_loads",
    "Reads of the Redis Cluster slot map by the hot-read path (at start, after a MOVED, a"
    " failed connection to a primary, or a topology change seen by tracking), by result.",
    ["result"],
    namespace=NAMESPACE,
)
FILLS_IN_FLIGHT = Gauge(
    "cache_fills_in_flight",
    "Cache fills in progress (one per key and worker; concurrent misses share one).",
    ["entity"],
    namespace=NAMESPACE,
    multiprocess_mode="livesum",
)

# The near-cache (api/nearcache.py): user entries in each worker's memory, kept
# true by Redis's client tracking.  cache_lookups_total keeps counting every hit;
# these say how many of them never left the process, and why entries went.
NEARCACHE_LOOKUPS = Counter(
    "nearcache_lookups",
    "Near-cache lookups of user keys: hit (answered from the worker's memory), miss (read"
    " from Redis), bypass (not consulted: tracking not established).",
    ["result"],
    namespace=NAMESPACE,
)
NEARCACHE_FILLS = Counter(
    "nearcache_fills",
    "Values read from Redis for the near-cache: stored, invalidated (an invalidation of the"
    " key crossed the read, so the reply was dropped), too_large (above NEARCACHE_MAX_BYTES).",
    ["result"],
    namespace=NAMESPACE,
)
NEARCACHE_EVICTIONS = Counter(
    "nearcache_evictions",
    "Near-cache entries removed by the worker: capacity (NEARCACHE_MAX_ENTRIES or"
    " NEARCACHE_MAX_BYTES) or expired (the Redis TTL it was read with ran out).",
    ["reason"],
    namespace=NAMESPACE,
)
NEARCACHE_INVALIDATIONS = Counter(
    "nearcache_invalidations",
    "User keys named by invalidation messages from Redis (any change under the prefix).",
    namespace=NAMESPACE,
)
NEARCACHE_RESETS = Counter(
    "nearcache_resets",
    "Near-cache emptied at once: flush (FLUSHALL/FLUSHDB), disconnected (invalidation"
    " connection lost), heartbeat (no answer on it within REDIS_TIMEOUT_S), topology (Redis"
    " Cluster: a failover, a slot moving, a node added or removed, a MOVED or ASK seen).",
    ["reason"],
    namespace=NAMESPACE,
)
NEARCACHE_ENTRIES = Gauge(
    "nearcache_entries",
    "Entries held in near-caches (summed over workers).",
    namespace=NAMESPACE,
    multiprocess_mode="livesum",
)
NEARCACHE_BYTES = Gauge(
    "nearcache_bytes",
    "Bytes held in near-caches, keys and values with Python's object overhead (summed over workers).",
    namespace=NAMESPACE,
    multiprocess_mode="livesum",
)
NEARCACHE_TRACKING = Gauge(
    "nearcache_tracking",
    "Workers whose near-cache is in use: invalidation connection up with CLIENT TRACKING on"
    " (on Redis Cluster: one on every primary).",
    namespace=NAMESPACE,
    multiprocess_mode="livesum",
)

# Freshness by GTID (api/freshness.py, api/db.py): fills from a read replica, and reads
# that carry the GTID of their client's own write (Cachetail-Min-GTID).
REPLICA_WAITS = Counter(
    "replica_waits",
    "Replica reads that had to wait for the replica to apply a GTID state first (a fill's"
    " watermark, a read's Cachetail-Min-GTID): ok (applied within DB_READ_WAIT_MS) or"
    " timeout (the read went to the primary).",
    ["result"],
    namespace=NAMESPACE,
)
PRIMARY_READS = Counter(
    "primary_reads",
    "Reads sent to the primary although DB_READ_HOST names a replica, by reason: timeout (the"
    " replica did not apply the state in time), lag (DB_READ_MAX_LAG_MS: the key changed more"
    " recently), unmarked (no watermark: the invalidator has not run on this Redis yet),"
    " min_gtid (a Cachetail-Min-GTID not applied in time), contended (an answer not stored,"
    " after waiting for another process's fill), replica_error, unprobed (the replica not"
    " reached yet).",
    ["reason"],
    namespace=NAMESPACE,
)
MIN_GTID_WAITS = Counter(
    "min_gtid_waits",
    "Reads with a Cachetail-Min-GTID the invalidator had not applied yet when they arrived:"
    " ok (applied within API_MIN_GTID_WAIT_MS) or timeout (answered from the primary, not stored).",
    ["result"],
    namespace=NAMESPACE,
)
FRESHNESS_WAIT_SECONDS = Histogram(
    "freshness_wait_seconds",
    "Time a read waited for a GTID: replica (the wait and the SELECT, when the replica had"
    " not applied the state yet) or min_gtid (for the invalidator to apply a Cachetail-Min-GTID).",
    ["kind"],
    namespace=NAMESPACE,
    buckets=LATENCY_BUCKETS_S,
)
