"""GET /metrics and the figures /cache/stats reads, summed over workers in multiprocess mode.

With PROMETHEUS_MULTIPROC_DIR set (``python -m api --workers N`` sets it) every
worker writes its values to files there; a scrape of any worker reads them all
through a MultiProcessCollector.  Counter files of dead workers are kept (their
counts happened); live-gauge files of dead pids are removed, or a crashed
worker's in-flight fills would be counted forever.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Awaitable
from pathlib import Path

from prometheus_client import REGISTRY, CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client import multiprocess
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from metrics.api import HOT, HTTP_REQUEST_SECONDS, HTTP_REQUESTS
from metrics.batched import Counted, Timed

_LIVE_GAUGE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")


def multiproc_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def forget_dead_workers(path: str) -> list[int]:
    """Remove the live-gauge files of pids that no longer run; returns those pids."""
    dead: set[int] = set()
    for entry in Path(path).iterdir():
        match = _LIVE_GAUGE_FILE.match(entry.name)
        if match and not _pid_alive(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in dead:
        multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]  # prometheus_client.multiprocess is unannotated
    return sorted(dead)


def registry() -> CollectorRegistry:
    """What this host's figures are read from: this process's registry, or in multiprocess mode
    every worker's files (this worker's pending hot-path updates written first)."""
    path = multiproc_dir()
    if path is None:
        return REGISTRY
    HOT.flush()
    forget_dead_workers(path)
    collected = CollectorRegistry()
    multiprocess.MultiProcessCollector(collected, path=path)  # type: ignore[no-untyped-call]  # prometheus_client.multiprocess is unannotated
    return collected


def lookup_totals() -> dict[str, float]:
    """cachetail_cache_lookups_total summed by result over entities (and workers)."""
    totals = {"hit": 0.0, "miss": 0.0, "bypass": 0.0}
    for by_result in lookups_by_entity().values():
        for result, value in by_result.items():
            totals[result] += value
    return totals


def lookups_by_entity() -> dict[str, dict[str, float]]:
    """cachetail_cache_lookups_total by entity (or list) name and result, summed over workers."""
    out: dict[str, dict[str, float]] = {}
    for family in registry().collect():
        if family.name != "cachetail_cache_lookups":
            continue
        for sample in family.samples:
            result = sample.labels.get("result")
            if sample.name.endswith("_total") and result in ("hit", "miss", "bypass"):
                by_result = out.setdefault(sample.labels.get("entity", ""), {"hit": 0.0, "miss": 0.0, "bypass": 0.0})
                by_result[result] += sample.value
    return out


def nearcache_totals() -> dict[str, int]:
    """The near-caches' figures summed over workers (cachetail_nearcache_*)."""
    totals = {"workers_tracking": 0.0, "hits": 0.0, "misses": 0.0, "bypasses": 0.0,
              "entries": 0.0, "bytes": 0.0}
    lookups = {"hit": "hits", "miss": "misses", "bypass": "bypasses"}
    gauges = {"cachetail_nearcache_tracking": "workers_tracking",
              "cachetail_nearcache_entries": "entries", "cachetail_nearcache_bytes": "bytes"}
    for family in registry().collect():
        for sample in family.samples:
            if sample.name in gauges:
                totals[gauges[sample.name]] += sample.value
            elif sample.name == "cachetail_nearcache_lookups_total":
                totals[lookups[sample.labels["result"]]] += sample.value
    return {name: int(value) for name, value in totals.items()}


async def metrics(request: Request) -> Response:
    return Response(generate_latest(registry()), headers={"Content-Type": CONTENT_TYPE_LATEST})


class HttpMetrics:
    """Counts every request by route template (never the raw path: bounded labels)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        def send_status(message: Message) -> Awaitable[None]:
            # A plain function handing back send's awaitable: no coroutine of its own
            # per message (a measurable share of a near-cache hit).
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            return send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            count_request(route, scope["method"], status, time.perf_counter() - started)


def count_request(route: str, method: str, status: int, seconds: float) -> None:
    """One request in cachetail_http_requests_total and its duration (batched: metrics/batched.py)."""
    if method not in _METHODS:
        method = "other"  # a client's method is no label: the set stays bounded
    cells = _CELLS.get((route, method, status)) or _cells(route, method, status)
    cells[0].inc()
    cells[1].observe(seconds)


# labels() takes a lock and builds its key on every call; the label sets are few and
# bounded (route templates, methods, statuses), so each is resolved once.
_CELLS: dict[tuple[str, str, int], tuple[Counted, Timed]] = {}


def _cells(route: str, method: str, status: int) -> tuple[Counted, Timed]:
    cells = _CELLS[(route, method, status)] = (HOT.counter(HTTP_REQUESTS.labels(route, method, str(status))),
                                               HOT.histogram(HTTP_REQUEST_SECONDS.labels(route, method)))
    return cells


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
