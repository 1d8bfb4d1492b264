"""Server-side figures of a phase, read off the difference of two /metrics scrapes."""

from __future__ import annotations

from typing import Any

from bench.promdiff import Scrape

QUANTILES = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99))

LOOKUPS = "cachetail_cache_lookups_total"
LOOKUP_SECONDS = "cachetail_cache_lookup_duration_seconds"
FILLS = "cachetail_cache_fills_total"
SELECTS = "cachetail_mysql_queries_total"
SELECT_SECONDS = "cachetail_mysql_query_duration_seconds"
HTTP_SECONDS = "cachetail_http_request_duration_seconds"
REDIS_ERRORS = "cachetail_redis_errors_total"

INV = "cachetail_invalidator_"
COMMIT_TO_APPLIED = INV + "commit_to_applied_seconds"
RECEIVED_TO_APPLIED = INV + "received_to_applied_seconds"


def quantiles(d: Scrape, histogram: str, **where: str) -> dict[str, float | None]:
    out: dict[str, float | None] = {f"{n}_s": d.quantile(histogram, q, **where) for n, q in QUANTILES}
    out["mean_s"] = d.mean(histogram, **where)
    out["count"] = int(d.value(f"{histogram}_count", **where))
    return out


def hit_rate(lookups: dict[str, float]) -> float | None:
    total = sum(lookups.values())
    return lookups.get("hit", 0.0) / total if total else None


def api_figures(d: Scrape, entity: str | None = None, route: str | None = None) -> dict[str, Any]:
    """Lookups (hit/miss/bypass), hit rate, SELECTs, fill outcomes, Redis errors and the
    server's latency percentiles (cache lookup by result, MySQL, HTTP for ``route``)."""
    where = {"entity": entity} if entity else {}
    lookups = {r: int(v) for r, v in d.by(LOOKUPS, "result", **where).items()}
    for r in ("hit", "miss", "bypass"):
        lookups.setdefault(r, 0)
    out: dict[str, Any] = {
        "lookups": lookups,
        "hit_rate": hit_rate(lookups),
        "selects": int(d.value(SELECTS, **where)),
        "selects_by_entity": {k: int(v) for k, v in d.by(SELECTS, "entity").items()},
        "fills": {k: int(v) for k, v in d.by(FILLS, "result", **where).items()},
        "redis_errors": int(d.value(REDIS_ERRORS)),
        "lookup_latency": {r: quantiles(d, LOOKUP_SECONDS, result=r, **where)
                           for r, n in lookups.items() if n},
        "mysql_latency": quantiles(d, SELECT_SECONDS, **where),
    }
    if route:
        out["http_latency"] = quantiles(d, HTTP_SECONDS, route=route, method="GET")
    return out


def invalidator_figures(d: Scrape) -> dict[str, Any]:
    """Transactions applied, keys acted on, row events, commit->applied and
    received->applied percentiles, and the lag gauge after the phase."""
    return {
        "transactions": int(d.value(INV + "transactions_total")),
        "keys": {k: int(v) for k, v in d.by(INV + "keys_total", "action").items()},
        "row_events": {k: int(v) for k, v in d.by(INV + "row_events_total", "table").items()},
        "commit_to_applied": quantiles(d, COMMIT_TO_APPLIED),
        "received_to_applied": quantiles(d, RECEIVED_TO_APPLIED),
        "seconds_behind_after": d.value(INV + "seconds_behind"),
        "reconnects": int(d.value(INV + "reconnects_total")),
        "full_invalidations": int(d.value(INV + "full_invalidations_total")),
        # the consistency auditor (in the leader): checks it made and what it found
        "audit_checks": {k: int(v) for k, v in d.by("cachetail_audit_checks_total", "result").items()},
        "audit_repairs": int(d.value("cachetail_audit_repairs_total")),
    }
