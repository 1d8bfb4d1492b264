"""Invalidation -> near-cache delay: from a DEL sent to Redis to the moment every
worker's near-cache has applied its invalidation.

The workers are ``bench/nearcache_probe.py`` processes (the real API plus a probe
that records, with CLOCK_MONOTONIC, when each invalidation was applied).  This
process stands in for the invalidator: it DELs user keys the workers hold, one
at a time at ``rate`` per second, each timed just before it is sent; a key's
delay is its slowest worker's arrival minus that time.  Run idle, and again
while wrk loads the first worker with warm reads (the delay a busy event loop
adds; loading every worker of a 2-core machine at once measures the scheduler).

And what a reader sees: as soon as each DEL has returned, the key is read from
every worker; "stale" counts answers still served from a near-cache.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from typing import Any

import httpx
import redis

from bench import wrk
from bench.stats import percentile
from cachetail.keyspace import Keyspace
from cachetail.settings import RedisSettings

PROBE_BASE_ID = 3_000_000_000  # ids no table holds: the DELs touch nothing else


def _client(settings: RedisSettings) -> redis.Redis:
    return redis.Redis(ssl=settings.tls, **settings.client_kwargs())


def _prepare(probes: Sequence[str], client: redis.Redis, keys: Keyspace, ids: range,
             http: httpx.Client) -> None:
    """The keys exist and every worker's near-cache holds them."""
    value = b'{"id":0,"probe":"' + b"x" * 150 + b'"}'
    pipe = client.pipeline(transaction=False)
    for user_id in ids:
        pipe.set(keys.user(user_id), value, ex=3600)
    pipe.execute()
    for url in probes:  # a read keeps it, the next is served from memory
        for user_id in ids:
            for _ in range(2):
                http.get(f"{url}/user/{user_id}")


def _fire(probes: Sequence[str], client: redis.Redis, keys: Keyspace, ids: range,
          rate: float, http: httpx.Client) -> dict[str, Any]:
    for url in probes:
        if not http.post(f"{url}/_probe/arm").json().get("live"):
            raise RuntimeError(f"{url}: the near-cache is not tracking")
    sent: dict[str, float] = {}
    stale = 0
    gap = 1.0 / rate
    next_at = time.monotonic()
    for user_id in ids:
        key = keys.user(user_id)
        sent[key] = time.monotonic()
        client.delete(key)
        for url in probes:  # a reader who heard of the write: never the old value
            stale += http.get(f"{url}/user/{user_id}").headers.get("x-cache-tier") == "near"
        next_at += gap
        time.sleep(max(0.0, next_at - time.monotonic()))
    seen_by = _arrivals(probes, set(sent), http)
    delays, lost = [], 0
    for key, t0 in sent.items():
        seen = [found["arrivals"].get(key) for found in seen_by]
        if any(t is None for t in seen):
            lost += 1
            continue
        delays.append(max(seen) - t0)
    return {"count": len(delays), "lost": lost, "stale_reads": stale,
            "tracking_resets": sum(found["resets"] for found in seen_by),
            "p50_s": percentile(delays, 0.5), "p90_s": percentile(delays, 0.9),
            "p99_s": percentile(delays, 0.99), "max_s": max(delays) if delays else None}


def _arrivals(probes: Sequence[str], keys: set[str], http: httpx.Client,
              patience_s: float = 5.0) -> list[dict[str, Any]]:
    """Every probe's record, once each has seen every key or ``patience_s`` has passed
    (a key still missing then counts as lost): a loaded machine delays, it does not lose."""
    deadline = time.monotonic() + patience_s
    while True:
        seen_by = [http.get(f"{url}/_probe/arrivals").json() for url in probes]
        if all(keys <= found["arrivals"].keys() for found in seen_by) or time.monotonic() > deadline:
            return seen_by
        time.sleep(0.05)


def measure(probes: Sequence[str], settings: RedisSettings, keys: Keyspace, *, samples: int,
            rate: float, load_paths: Sequence[str], connections: int) -> dict[str, Any]:
    """Idle, then under wrk load on every probe: count, lost, p50/p99/max of the delay."""
    client = _client(settings)
    idle_ids = range(PROBE_BASE_ID, PROBE_BASE_ID + samples)
    loaded_ids = range(PROBE_BASE_ID + samples, PROBE_BASE_ID + 2 * samples)
    loads: list[dict[str, Any]] = []
    failures: list[RuntimeError] = []
    try:
        with httpx.Client(timeout=10) as http:
            _prepare(probes, client, keys, idle_ids, http)
            _prepare(probes, client, keys, loaded_ids, http)
            idle = _fire(probes, client, keys, idle_ids, rate, http)
            duration = math.ceil(samples / rate + 1.5)  # wrk takes whole seconds

            def load() -> None:
                try:
                    loads.append(wrk.run(probes[0], load_paths, duration_s=duration,
                                         connections=connections, threads=1))
                except RuntimeError as exc:
                    failures.append(exc)

            thread = threading.Thread(target=load)
            thread.start()
            time.sleep(0.5)  # the load is on before the first DEL and until after the last
            loaded = _fire(probes, client, keys, loaded_ids, rate, http)
            thread.join()
    finally:
        client.close()
    if failures:
        raise failures[0]
    loaded["load_rps"] = loads[0]["throughput_rps"]
    return {"workers": len(probes), "samples": samples, "rate": rate,
            "idle": idle, "loaded": loaded}
