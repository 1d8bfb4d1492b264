"""results.json (every figure, the configuration, versions, the machine) and the summary table."""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.ui import UI, ms, num, pct

PACKAGES = ("cachetail", "starlette", "uvicorn", "uvloop", "redis", "hiredis", "PyMySQL",
            "DBUtils", "mysql-replication", "prometheus-client", "httpx", "rich", "matplotlib")
ROOT = Path(__file__).resolve().parent.parent


def environment() -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "hostname": socket.gethostname(),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_bytes": _memory(),
        "load_average": list(os.getloadavg()),
        "versions": versions,
        "wrk": _wrk_version(),
        "git_commit": _git_commit(),
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None


def _wrk_version() -> str | None:
    path = shutil.which("wrk")
    if not path:
        return None
    try:
        out = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=5)
        return (out.stdout or out.stderr).splitlines()[0].strip()
    except (OSError, subprocess.SubprocessError, IndexError):
        return "installed"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null (with "+Inf" kept for bucket bounds)."""
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        return value
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def write_json(results: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(clean(results), indent=2, sort_keys=False) + "\n")
    return path


# ---------------------------------------------------------------- the summary table


def summary(results: dict[str, Any], ui: UI) -> None:
    sc = results.get("scenarios", {})
    ceiling = results.get("client_ceiling")
    if ceiling:
        ui.log(f"load generator: {ceiling['processes']} processes, {ceiling['connections']} "
               f"keep-alive connections; its ceiling against a null HTTP server: "
               f"{num(ceiling['throughput_rps'])} req/s")
    if "uncached" in sc:
        _uncached(sc["uncached"], ui)
    if "warming" in sc:
        _warming(sc["warming"], ui)
    if "stampede" in sc:
        _stampede(sc["stampede"], ui)
    if "freshness" in sc:
        _freshness(sc["freshness"], ui)
    for w in results.get("warnings", []):
        ui.log(f"[yellow]warning:[/yellow] {w}")


def _uncached(r: dict[str, Any], ui: UI) -> None:
    nc, c = r["nocache"], r["cached"]
    sp = r["speedup"]

    def row(label: str, key: str, f: Any, speed: Any = "") -> list[str]:
        return [label, f(nc["client"][key]), f(c["client"][key]), speed]

    def x(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}x"

    rows = [
        row("throughput (req/s)", "throughput_rps", num, x(r["throughput_ratio"])),
        row("p50 (ms)", "p50_s", ms, x(sp["p50"])),
        row("p90 (ms)", "p90_s", ms, x(sp["p90"])),
        row("p99 (ms)", "p99_s", ms, x(sp["p99"])),
        row("max (ms)", "max_s", ms),
        ["p50 / p99 at 1 connection (ms)", _pair(nc.get("client_1conn")), _pair(c.get("client_1conn")),
         x(r.get("speedup_1conn", {}).get("p50"))],
        ["server: SELECTs", num(nc["server"]["selects"]), num(c["server"]["selects"]), ""],
        ["server: hits / misses", "-", f"{c['server']['lookups']['hit']:,} / "
                                        f"{c['server']['lookups']['miss']:,}", ""],
        ["server: HTTP p50 / p99 (ms)", _pair(nc["server"].get("http_latency")),
         _pair(c["server"].get("http_latency")), ""],
        ["client CPU share", pct(nc["client"]["client_cpu_share"]),
         pct(c["client"]["client_cpu_share"]), ""],
    ]
    ui.table(f"1. uncached vs cached: GET /user/{{id}} over the same {r['ids']:,} ids, "
             f"{nc['client']['connections']} connections",
             ["", "nocache", "cached (warm)", "speedup"], rows)


def _warming(r: dict[str, Any], ui: UI) -> None:
    s = r["server"]
    lk = s["lookups"]
    miss = s["lookup_latency"].get("miss", {})
    hit = s["lookup_latency"].get("hit", {})
    rows = [
        ["requests / run time", f"{r['client']['count']:,} in {r['ran_s']:.1f} s"],
        [f"time to {r['target_hit_rate']:.0%} hit rate (client / server)",
         f"{_s(r['time_to_target_s'])} / {_s(r['time_to_target_server_s'])}"],
        ["steady state", f"at {_s(r['steady_state_at_s'])}" if r["steady_state_reached"]
         else "not reached before the time limit"],
        ["hit rate, last windows", pct(r["final_hit_rate"])],
        ["server: hits / misses / bypasses", f"{lk['hit']:,} / {lk['miss']:,} / {lk['bypass']:,}"],
        ["server: hit rate over the phase", pct(s["hit_rate"])],
        ["server: SELECTs (user / products)", " / ".join(
            num(s["selects_by_entity"].get(e, 0)) for e in ("user", "products"))],
        ["server: lookup p50/p99, hit (ms)", _pair(hit)],
        ["server: lookup p50/p99, miss (ms)", _pair(miss)],
        ["client: user p50 / p99 (ms)", f"{ms(r['client_user']['p50_s'])} / {ms(r['client_user']['p99_s'])}"],
    ]
    ui.table("2. cold -> warm (Zipf over the users, plus product lists)", ["", ""], rows)


def _stampede(r: dict[str, Any], ui: UI) -> None:
    rows = []
    for rd in r["rounds"]:
        rows.append([f"user {rd['id']}", num(rd["selects"]),
                     " ".join(f"{k}={v}" for k, v in sorted(rd["x_cache"].items())),
                     ms(rd["client"]["p50_s"]), ms(rd["client"]["p99_s"]), ms(rd["client"]["max_s"])])
    ui.table(f"3. stampede: {r['n']} concurrent first reads of one id",
             ["round", "SELECTs", "X-Cache", "p50 ms", "p99 ms", "max ms"], rows)


def _freshness(r: dict[str, Any], ui: UI) -> None:
    e = r["end_to_end"]
    inv = r["invalidator"]
    rows = [
        ["writes / reads", f"{r['writes']:,} / {r['reads']:,}"],
        ["commit -> reader sees it p50/p90/p99/max (ms)",
         " / ".join(ms(e[k]) for k in ("p50_s", "p90_s", "p99_s", "max_s"))],
        ["invalidator received -> applied p50/p99 (ms)", _pair(inv["received_to_applied"])],
        ["invalidator commit -> applied p50/p99 (ms, 1 s resolution)", _pair(inv["commit_to_applied"])],
        ["invalidator transactions / keys deleted", f"{inv['transactions']:,} / "
                                                    f"{inv['keys'].get('deleted', 0):,}"],
        ["auditor checks / inconsistent (0 expected)",
         f"{sum(inv.get('audit_checks', {}).values()):,} / {inv.get('audit_checks', {}).get('inconsistent', 0):,}"],
        [f"stale reads later than {r['bound_s']:g} s after commit", num(r["stale_reads_after_bound"])],
        ["reads older than a value already seen", num(r["reads_older_than_already_seen"])],
        ["writes never seen by a reader", num(r["writes_never_seen"])],
        ["stale after the writes stopped (ids)", str(len(r["final_stale"]))],
        ["server: fills lost to an invalidation", num(r["server"]["fills"].get("stale_prevented", 0))],
    ]
    ui.table("4. freshness under writes", ["", ""], rows)


def _pair(q: dict[str, Any] | None) -> str:
    if not q:
        return "-"
    return f"{ms(q.get('p50_s'))} / {ms(q.get('p99_s'))}"


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} s"
