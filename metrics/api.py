"""Metrics of the read API (summed over uvicorn workers in multiprocess mode)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from metrics import LATENCY_BUCKETS_S

NAMESPACE = "cachetail"

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
FILLS_IN_FLIGHT = Gauge(
    "cache_fills_in_flight",
    "Cache fills in progress (one per key and worker; concurrent misses share one).",
    ["entity"],
    namespace=NAMESPACE,
    multiprocess_mode="livesum",
)
