"""Scenarios 1-3: uncached against cached, cold -> warm, stampede.  (4 is bench.freshness.)

Each returns a dict of figures for results.json: the client's view (from the load
generator's samples) beside the server's (from the difference of /metrics scrapes
taken before and after the phase).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bench import figures
from bench.httpclient import Connection
from bench.load import KIND_INDEX, Mix, Samples, run_load
from bench.promdiff import Scrape, diff
from bench.stats import first_time_at_least, ratio, summarize, windows
from bench.target import Target
from bench.ui import UI

USER_ROUTE = "/user/{id}"
NOCACHE_ROUTE = "/user/{id}/nocache"
TARGET_HIT_RATE = 0.80  # the lab's target


@dataclass
class Plan:
    """How hard and how long: set from the command line (``--quick`` shrinks it)."""

    duration_s: float = 10.0
    connections: int = 16
    processes: int = 2
    ids: int = 1000
    warm_max_s: float = 60.0
    warm_min_s: float = 10.0
    window_s: float = 1.0
    single_s: float = 5.0
    stampede_n: int = 200
    stampede_rounds: int = 3
    users: int = 10_000
    zipf_s: float = 1.0
    products_share: float = 0.05
    seed: int = 42


def client_figures(s: Samples, kind: str | None = None) -> dict[str, Any]:
    lat = s.select(kind)
    out = summarize(lat, s.wall_s)
    out["status"] = s.status_counts()
    out["x_cache"] = s.cache_counts()
    out["errors"] = s.errors
    out["client_cpu_share"] = s.client_cpu_share()
    out["connections"] = s.connections
    out["processes"] = s.processes
    return out


# ---------------------------------------------------------------- 1. uncached vs cached


def uncached_vs_cached(t: Target, plan: Plan, ui: UI) -> tuple[dict[str, Any], dict[str, list[float]]]:
    rng = random.Random(plan.seed)
    ids = rng.sample(range(1, plan.users + 1), min(plan.ids, plan.users))
    with ui.phase(f"warm {len(ids)} ids", len(ids), timed=False) as ph:
        for i in range(0, len(ids), 100):
            t.fetch_all([f"/user/{x}" for x in ids[i:i + 100]])
            ph.advance(min(100, len(ids) - i))
    out: dict[str, Any] = {"ids": len(ids)}
    raw: dict[str, list[float]] = {}
    for name, suffix, kind, route in (("nocache", "/nocache", "nocache", NOCACHE_ROUTE),
                                      ("cached", "", "user", USER_ROUTE)):
        paths = tuple(f"/user/{x}{suffix}" for x in ids)
        mix = Mix(paths=paths, kinds=(kind,) * len(paths), seed=plan.seed)
        before = t.scrape_api()
        with ui.phase(f"{name}: GET /user/{{id}}{suffix}", plan.duration_s):
            s = run_load(t.api_url, mix, duration_s=plan.duration_s,
                         connections=plan.connections, processes=plan.processes)
        d = diff(before, t.scrape_api())
        raw[name] = s.select(kind)
        with ui.phase(f"{name}: one connection", plan.single_s):
            one = run_load(t.api_url, mix, duration_s=plan.single_s, connections=1, processes=1)
        out[name] = {"client": client_figures(s, kind),
                     "server": figures.api_figures(d, "user", route),
                     "client_1conn": client_figures(one, kind)}
    nc, c = out["nocache"]["client"], out["cached"]["client"]
    out["speedup"] = {q: ratio(nc[f"{q}_s"], c[f"{q}_s"]) for q in ("p50", "p90", "p99", "mean")}
    nc1, c1 = out["nocache"]["client_1conn"], out["cached"]["client_1conn"]
    out["speedup_1conn"] = {q: ratio(nc1[f"{q}_s"], c1[f"{q}_s"]) for q in ("p50", "p90", "p99", "mean")}
    out["throughput_ratio"] = ratio(c["throughput_rps"], nc["throughput_rps"])
    return out, raw


# ---------------------------------------------------------------- 2. cold -> warm


class _Monitor:
    """Scrapes the API every window while the load runs; stops it at steady state."""

    def __init__(self, t: Target, plan: Plan) -> None:
        self.t, self.plan = t, plan
        self.scrapes: list[tuple[float, Scrape]] = []
        self.steady_at: float | None = None
        self._thread: threading.Thread | None = None
        self._done = threading.Event()

    def start(self, start_at: float, stop: Any) -> None:
        self.start_at = start_at
        self._thread = threading.Thread(target=self._loop, args=(stop,), daemon=True)
        self._thread.start()

    def _loop(self, stop: Any) -> None:
        time.sleep(max(0.0, self.start_at - time.monotonic()))
        nxt = self.start_at
        while not self._done.is_set():
            self.scrapes.append((time.monotonic() - self.start_at, self.t.scrape_api()))
            if self.steady_at is None and self._steady():
                self.steady_at = self.scrapes[-1][0]
                stop.set()
            nxt += self.plan.window_s
            self._done.wait(max(0.0, nxt - time.monotonic()))

    def _steady(self) -> bool:
        """Steady: past the minimum time, the last 3 windows' hit rate is no more than
        half a point above the 3 before."""
        rates = [r for _, r in self.server_timeline()]
        if self.scrapes[-1][0] < self.plan.warm_min_s or len(rates) < 6:
            return False
        if any(r is None for r in rates[-6:]):
            return False
        return statistics.mean(rates[-3:]) - statistics.mean(rates[-6:-3]) < 0.005

    def server_timeline(self) -> list[tuple[float, float | None]]:
        out = []
        for (t0, a), (_, b) in zip(self.scrapes, self.scrapes[1:], strict=False):
            out.append((t0, figures.hit_rate(diff(a, b).by(figures.LOOKUPS, "result"))))
        return out

    def stop(self) -> None:
        self._done.set()
        if self._thread:
            self._thread.join(10)


def cold_to_warm(t: Target, plan: Plan, ui: UI) -> tuple[dict[str, Any], dict[str, Any]]:
    removed = t.clear_cache()
    mix = Mix(users=plan.users, zipf_s=plan.zipf_s, products_share=plan.products_share,
              seed=plan.seed)
    before = t.scrape_api()
    monitor = _Monitor(t, plan)
    with ui.phase("cold -> warm: Zipf mix", plan.warm_max_s) as ph:
        ph.note(f"cleared {removed} keys")
        s = run_load(t.api_url, mix, duration_s=plan.warm_max_s, connections=plan.connections,
                     processes=plan.processes, on_start=monitor.start)
        monitor.stop()
    d = diff(before, t.scrape_api())
    t0 = min(s.start) if len(s) else 0.0
    timeline = _client_timeline(s, t0, plan.window_s)
    client_series = [(w["t_s"], w["hit_rate"]) for w in timeline]
    server_series = monitor.server_timeline()
    tail = [w["hit_rate"] for w in timeline[-3:] if w["hit_rate"] is not None]
    out = {
        "cleared_keys": removed,
        "mix": {"zipf_s": plan.zipf_s, "users": plan.users, "products_share": plan.products_share},
        "window_s": plan.window_s,
        "ran_s": s.wall_s,
        "steady_state_reached": monitor.steady_at is not None,
        "steady_state_at_s": monitor.steady_at,
        "final_hit_rate": statistics.mean(tail) if tail else None,
        "target_hit_rate": TARGET_HIT_RATE,
        "time_to_target_s": first_time_at_least(client_series, TARGET_HIT_RATE, sustain=2),
        "time_to_target_server_s": first_time_at_least(server_series, TARGET_HIT_RATE, sustain=2),
        "client": client_figures(s),
        "client_user": summarize(s.select("user"), s.wall_s),
        "server": figures.api_figures(d),
        "timeline": timeline,
        "server_timeline": [{"t_s": x, "hit_rate": y} for x, y in server_series],
    }
    first = [lat for st, lat, k in zip(s.start, s.latency, s.kind, strict=True)
             if st - t0 < plan.window_s and k == KIND_INDEX["user"]]
    misses = [lat for lat, k, c in zip(s.latency, s.kind, s.cache, strict=True)
              if k == KIND_INDEX["user"] and c == ord("M")]
    return out, {"cold_first_window": first, "misses": misses}


def _client_timeline(s: Samples, t0: float, width: float) -> list[dict[str, Any]]:
    rows = list(zip(s.latency, s.cache, s.kind, strict=True))
    out = []
    for start, group in windows(list(s.start), rows, width, t0):
        looked = [c for _, c, _k in group if c in (ord("H"), ord("M"), ord("B"))]
        hits = sum(1 for c in looked if c == ord("H"))
        user_lat = [lat for lat, _c, k in group if k == KIND_INDEX["user"]]
        summ = summarize(user_lat)
        out.append({"t_s": round(start, 3), "requests": len(group),
                    "throughput_rps": len(group) / width,
                    "hit_rate": hits / len(looked) if looked else None,
                    "p50_s": summ["p50_s"], "p99_s": summ["p99_s"]})
    return out


# ---------------------------------------------------------------- 3. stampede


def stampede(t: Target, plan: Plan, ui: UI) -> dict[str, Any]:
    t.clear_cache()
    rng = random.Random(plan.seed + 3)
    ids = rng.sample(range(1, plan.users + 1), plan.stampede_rounds)
    rounds, every = [], []
    with ui.phase(f"stampede: {plan.stampede_n} x cold GET", len(ids), timed=False) as ph:
        for uid in ids:
            before = t.scrape_api()
            lat, resp = asyncio.run(_burst(t.api_url, f"/user/{uid}", plan.stampede_n))
            d = diff(before, t.scrape_api())
            server = figures.api_figures(d, "user")
            every.extend(lat)
            rounds.append({
                "id": uid, "requests": len(lat),
                "selects": server["selects"],
                "client": summarize(lat),
                "status": _count(str(r.status) for r in resp),
                "x_cache": _count(r.cache or "none" for r in resp),
                "server": server,
            })
            ph.advance()
    selects = [r["selects"] for r in rounds]
    return {"n": plan.stampede_n, "rounds": rounds, "selects_per_round": selects,
            "max_selects": max(selects) if selects else None,
            "latency": summarize(every)}


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for x in items:
        out[x] = out.get(x, 0) + 1
    return out


async def _burst(url: str, path: str, n: int) -> tuple[list[float], list[Any]]:
    """n connections opened and used once (GET /health, so the server has accepted and
    set up every one), then n GETs of one path sent at the same moment."""
    p = urlsplit(url)
    conns = [Connection(p.hostname or "127.0.0.1", p.port or 80) for _ in range(n)]
    await asyncio.gather(*(c.open() for c in conns))
    await asyncio.gather(*(c.get("/health") for c in conns))
    lat: list[float] = []

    async def one(c: Connection) -> Any:
        t0 = time.monotonic()
        r = await c.get(path)
        lat.append(time.monotonic() - t0)
        return r

    try:
        resp = await asyncio.gather(*(one(c) for c in conns))
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    return lat, list(resp)
