"""Scenario 4, freshness under writes: UPDATE rows at a set rate while reading them.

The writer commits ``full_name = "bench <tag> v<n>"`` on a few users, round robin, and
notes when each commit returned.  Readers poll the same users through the API and note
which version each answer carried.  From that: the end-to-end time until a reader sees
a committed value, reads that were stale later than a bound after the commit, reads that
went back to an older value than one already seen, and — after the writes stop and the
invalidator has had time — any user still cached with an old value.  The invalidator's
own commit -> applied histogram comes from its /metrics.  The rows are put back
(full_name and updated_at) at the end.
"""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bench import figures
from bench.httpclient import Connection, HttpError
from bench.promdiff import diff
from bench.stats import summarize
from bench.target import BenchError, DbConfig, Target
from bench.ui import UI

_NAME = re.compile(rb'"full_name"\s*:\s*"bench (\w+) v(\d+)"')


@dataclass(frozen=True)
class FreshnessPlan:
    duration_s: float = 10.0
    rate_per_s: float = 20.0
    ids: int = 20
    readers: int = 8
    bound_s: float = 1.0
    seed: int = 46
    users: int = 10_000


@dataclass(frozen=True)
class Write:
    id: int
    version: int
    t_commit: float


@dataclass(frozen=True)
class Read:
    id: int
    t_start: float
    t_end: float
    version: int  # 0: not one of this run's values (the original)
    cache: str


def version_of(body: bytes, tag: str) -> int:
    m = _NAME.search(body)
    return int(m.group(2)) if m and m.group(1).decode() == tag else 0


def analyze(writes: list[Write], reads: list[Read], bound_s: float) -> dict[str, Any]:
    """Figures from the writer's commits and the readers' observations (pure; tested)."""
    by_id: dict[int, list[Read]] = {}
    for r in sorted(reads, key=lambda r: r.t_start):
        by_id.setdefault(r.id, []).append(r)
    lags, unseen = [], 0
    for w in writes:
        seen = [r.t_end for r in by_id.get(w.id, ()) if r.version >= w.version and r.t_end >= w.t_commit]
        if seen:
            lags.append(min(seen) - w.t_commit)
        else:
            unseen += 1
    commits: dict[int, list[Write]] = {}
    for w in sorted(writes, key=lambda w: w.t_commit):
        commits.setdefault(w.id, []).append(w)
    stale_after_bound, went_back, examples = 0, 0, []
    for uid, rs in by_id.items():
        ws = commits.get(uid, [])
        for r in rs:
            due = [w.version for w in ws if w.t_commit + bound_s < r.t_start]
            if due and r.version < max(due):
                stale_after_bound += 1
                if len(examples) < 5:
                    examples.append({"id": uid, "read_version": r.version, "expected_at_least": max(due),
                                     "late_by_s": r.t_start - next(w.t_commit for w in ws if w.version == max(due))})
            seen_before = [o.version for o in rs if o.t_end < r.t_start]
            if seen_before and r.version < max(seen_before):
                went_back += 1
    return {
        "writes": len(writes),
        "reads": len(reads),
        "end_to_end": summarize(lags),
        "end_to_end_s": lags,
        "writes_never_seen": unseen,
        "bound_s": bound_s,
        "stale_reads_after_bound": stale_after_bound,
        "stale_examples": examples,
        "reads_older_than_already_seen": went_back,
    }


def freshness(t: Target, db: DbConfig, plan: FreshnessPlan, ui: UI) -> tuple[dict[str, Any], list[float]]:
    try:
        conn = db.connect()
    except Exception as exc:  # pymysql raises several kinds
        raise BenchError(f"cannot connect to MySQL as {db!r} for the freshness scenario: {exc}") from None
    ids = random.Random(plan.seed).sample(range(1, plan.users + 1), plan.ids)
    tag = f"{int(time.time()) % 10**6}{random.randrange(1000)}"
    with conn.cursor() as cur:
        cur.execute("SELECT id, full_name, updated_at FROM users WHERE id IN %s", (ids,))
        originals = {row[0]: (row[1], row[2]) for row in cur.fetchall()}
    ids = [i for i in ids if i in originals]
    if not ids:
        raise BenchError("the users table has none of the sample ids: is the sample data loaded?")
    t.fetch_all([f"/user/{i}" for i in ids])
    api0, inv0 = t.scrape_api(), t.scrape_invalidator()
    settle_s = plan.bound_s + 0.5
    try:
        with ui.phase(f"freshness: {plan.rate_per_s:g} UPDATE/s", plan.duration_s + settle_s):
            writes, reads, final = asyncio.run(_run(t.api_url, conn, ids, tag, plan, settle_s))
        api_d, inv_d = diff(api0, t.scrape_api()), diff(inv0, t.scrape_invalidator())
    finally:
        _restore(conn, originals)
        conn.close()
    out = analyze(writes, reads, plan.bound_s)
    lags = out.pop("end_to_end_s")
    last = {w.id: w.version for w in writes}
    out["final_stale"] = sorted(uid for uid, v in final.items() if v < last.get(uid, 0))
    out["final_checked"] = len(final)
    out["plan"] = {"rate_per_s": plan.rate_per_s, "ids": len(ids), "readers": plan.readers,
                   "duration_s": plan.duration_s}
    out["x_cache"] = _count(r.cache or "none" for r in reads)
    out["invalidator"] = figures.invalidator_figures(inv_d)
    out["invalidator_buckets"] = {
        "commit_to_applied": inv_d.buckets(figures.COMMIT_TO_APPLIED),
        "received_to_applied": inv_d.buckets(figures.RECEIVED_TO_APPLIED)}
    out["server"] = figures.api_figures(api_d, "user")
    return out, lags


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for x in items:
        out[x] = out.get(x, 0) + 1
    return out


async def _run(url: str, conn: Any, ids: list[int], tag: str, plan: FreshnessPlan,
               settle_s: float) -> tuple[list[Write], list[Read], dict[int, int]]:
    p = urlsplit(url)
    host, port = p.hostname or "127.0.0.1", p.port or 80
    writes: list[Write] = []
    reads: list[Read] = []
    stop_writing = threading.Event()
    done = asyncio.Event()

    def writer() -> None:
        versions = dict.fromkeys(ids, 0)
        start, n = time.monotonic(), 0
        with conn.cursor() as cur:
            while not stop_writing.is_set() and time.monotonic() - start < plan.duration_s:
                uid = ids[n % len(ids)]
                versions[uid] += 1
                cur.execute("UPDATE users SET full_name = %s WHERE id = %s",
                            (f"bench {tag} v{versions[uid]}", uid))
                writes.append(Write(uid, versions[uid], time.monotonic()))
                n += 1
                time.sleep(max(0.0, start + n / plan.rate_per_s - time.monotonic()))

    async def reader(i: int) -> None:
        c = Connection(host, port)
        rng = random.Random(plan.seed * 100 + i)
        try:
            while not done.is_set():
                uid = rng.choice(ids)
                t0 = time.monotonic()
                try:
                    r = await c.get(f"/user/{uid}")
                except (HttpError, OSError):
                    await asyncio.sleep(0.01)
                    continue
                reads.append(Read(uid, t0, time.monotonic(), version_of(r.body, tag), r.cache))
        finally:
            await c.close()

    tasks = [asyncio.ensure_future(reader(i)) for i in range(plan.readers)]
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(None, writer)
        await asyncio.sleep(settle_s)
    finally:
        stop_writing.set()
        done.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    final: dict[int, int] = {}
    c = Connection(host, port)
    try:
        for uid in ids:
            final[uid] = version_of((await c.get(f"/user/{uid}")).body, tag)
    finally:
        await c.close()
    return writes, reads, final


def _restore(conn: Any, originals: dict[int, tuple[str, Any]]) -> None:
    with conn.cursor() as cur:
        for uid, (name, updated) in originals.items():
            cur.execute("UPDATE users SET full_name = %s, updated_at = %s WHERE id = %s",
                        (name, updated, uid))
