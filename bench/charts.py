"""PNG charts (matplotlib, Agg: no display needed)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after matplotlib.use("Agg")
from matplotlib.ticker import FuncFormatter  # noqa: E402 - after matplotlib.use("Agg")

from bench.promdiff import counts_from_buckets  # noqa: E402 - after matplotlib.use("Agg")
from bench.stats import cdf_points  # noqa: E402 - after matplotlib.use("Agg")

DPI = 90


_PLAIN = FuncFormatter(lambda v, _pos: f"{v:g}")


def _plain_log(axis: Any) -> None:
    axis.set_major_formatter(_PLAIN)
    axis.set_minor_formatter(FuncFormatter(lambda v, _p: f"{v:g}" if str(f"{v:g}")[0] in "25" else ""))


def latency_cdf(series: dict[str, list[float]], path: Path, title: str = "") -> Path | None:
    """CDF of client latency per series (ms, log scale): nocache vs cold vs warm."""
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, values in series.items():
        x, y = cdf_points(values, 400)
        ax.step([v * 1000 for v in x], y, where="post", label=f"{name} (n={len(values):,})")
    ax.set_xscale("log")
    _plain_log(ax.xaxis)
    ax.set_xlabel("client latency (ms, log scale)")
    ax.set_ylabel("fraction of requests")
    ax.set_ylim(0, 1.01)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title or "GET /user/{id}: latency CDF")
    return _save(fig, path)


def warming(result: dict[str, Any], path: Path) -> Path | None:
    """Hit rate (client and server) and p50/p99 latency per window while the cache warms."""
    tl = result.get("timeline") or []
    if not tl:
        return None
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    t = [w["t_s"] for w in tl]
    ax1.plot(t, [_pct(w["hit_rate"]) for w in tl], label="client (X-Cache)", marker=".")
    st = result.get("server_timeline") or []
    if st:
        ax1.plot([w["t_s"] for w in st], [_pct(w["hit_rate"]) for w in st],
                 label="server (/metrics)", linestyle="--")
    target = result.get("target_hit_rate", 0.8) * 100
    ax1.axhline(target, color="grey", linewidth=0.8, linestyle=":")
    if result.get("time_to_target_s") is not None:
        ax1.axvline(result["time_to_target_s"], color="green", linewidth=0.8, linestyle=":",
                    label=f"{target:.0f}% at {result['time_to_target_s']:.1f} s")
    ax1.set_ylabel("hit rate (%)")
    ax1.set_ylim(0, 101)
    ax1.grid(True, alpha=0.3)
    ax1.legend(loc="lower right", fontsize=8)
    ax1.set_title("cold -> warm: Zipf user ids + product lists")
    ax2.plot(t, [_ms(w["p50_s"]) for w in tl], label="p50")
    ax2.plot(t, [_ms(w["p99_s"]) for w in tl], label="p99")
    ax2.set_yscale("log")
    _plain_log(ax2.yaxis)
    ax2.set_ylabel("GET /user/{id} latency (ms)")
    ax2.set_xlabel("seconds since the cache was cleared")
    ax2.grid(True, which="both", alpha=0.3)
    ax2.legend(loc="upper right", fontsize=8)
    return _save(fig, path)


def freshness(lags_s: list[float], result: dict[str, Any], path: Path) -> Path | None:
    """Histogram of commit -> seen by a reader (client) beside the invalidator's own
    received -> applied and commit -> applied bucket counts."""
    buckets = result.get("invalidator_buckets") or {}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.8))
    if lags_s:
        lo = max(min(lags_s) * 1000, 0.05)
        hi = max(max(lags_s) * 1000, lo * 1.01)
        bins = [lo * (hi / lo) ** (i / 30) for i in range(31)]
        ax1.hist([v * 1000 for v in lags_s], bins=bins)
        ax1.set_xscale("log")
        _plain_log(ax1.xaxis)
    bound = result.get("bound_s")
    ax1.set_title(f"commit -> a reader sees it (n={len(lags_s)})", fontsize=10)
    ax1.set_xlabel("ms (log scale)")
    ax1.set_ylabel("writes")
    ax1.grid(True, alpha=0.3)
    if bound:
        ax1.text(0.98, 0.95, f"stale after {bound:g} s: {result.get('stale_reads_after_bound', 0)}",
                 transform=ax1.transAxes, ha="right", va="top", fontsize=8)
    width = 0.4
    for offset, name in ((-width / 2, "received_to_applied"), (width / 2, "commit_to_applied")):
        rows = [r for r in counts_from_buckets(buckets.get(name) or [])]
        if not rows:
            continue
        labels = [_le(u) for _, u, _ in rows]
        ax2.bar([i + offset for i in range(len(rows))], [c for _, _, c in rows], width=width,
                label=name.replace("_", " "))
        ax2.set_xticks(range(len(rows)), labels, rotation=60, fontsize=7)
    ax2.set_title("invalidator /metrics (bucket upper bound, ms)", fontsize=10)
    ax2.set_ylabel("transactions")
    ax2.legend(fontsize=8)
    ax2.grid(True, axis="y", alpha=0.3)
    return _save(fig, path)


def _le(upper: float) -> str:
    return "+Inf" if math.isinf(upper) else f"{upper * 1000:g}"


def _pct(x: float | None) -> float:
    return math.nan if x is None else x * 100


def _ms(x: float | None) -> float:
    return math.nan if x is None else x * 1000


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
