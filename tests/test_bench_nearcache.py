"""The hit path's benchmarks at smoke size: bench/api_vs_bare.py (four targets, the invalidation
delay, the stampede) against the session's servers, bench/hitpath.py and bench/hitprofile.py.
The probes behind issue 7's design (tracking modes, where redis.asyncio spends a GET) are
retired: docs/probes.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from support.invalidator import unique_prefix

ROOT = Path(__file__).resolve().parent.parent


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("DB_", "REDIS_", "CACHE_", "ADMIN_", "API_", "NEARCACHE"))}


def test_api_vs_bare_quick_run(stack, tmp_path: Path) -> None:
    env_file = tmp_path / "bench.env"
    settings = {**stack.api_env(), "CACHE_KEY_PREFIX": unique_prefix()}
    env_file.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    out = tmp_path / "figures.json"
    done = subprocess.run([sys.executable, "-m", "bench.api_vs_bare", "--quick", "--env-file",
                           str(env_file), "--json", str(out)], cwd=ROOT, env=_clean_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads(out.read_text())["summary"]
    for target in ("const", "bare", "near", "off"):
        assert summary[target]["throughput_rps"] > 0, target
    assert set(summary["ratios_of_medians"]) == {"near_const", "off_const", "near_bare", "off_bare"}
    assert len(summary["ratios_per_round"]["near_const"]) == 1
    for phase in ("idle", "loaded"):
        delay = summary["delay"][phase]
        assert (delay["count"], delay["lost"], delay["stale_reads"]) == (100, 0, 0), delay
        assert 0 < delay["p50_s"] <= delay["p99_s"] <= delay["max_s"] < 1.0
    assert summary["delay"]["loaded"]["load_rps"] > 0
    assert summary["stampede_selects"] == [1]
    for line in ("near-cache on / constant bytes", "near-cache off / constant bytes", "near-cache on / bare GET",
                 "reads right after a DEL served from a near-cache: 0 of 100"):
        assert line in done.stdout, line


def test_hitpath_quick_run(tmp_path: Path) -> None:
    """bench/hitpath.py at smoke size: misses against nocache, the near-cache over a Redis
    behind a delaying proxy, one and two workers; every run answered, none failed."""
    out = tmp_path / "hitpath.json"
    done = subprocess.run([sys.executable, "-m", "bench.hitpath", "--quick", "--json", str(out)],
                          cwd=ROOT, env=_clean_env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    figures = json.loads(out.read_text())
    runs = [figures["misses"]["miss"], figures["misses"]["nocache"], figures["slow_redis"]["near_on"],
            figures["slow_redis"]["near_off"], figures["workers"]["1"], figures["workers"]["2"]]
    for run in runs:
        assert run["requests"] > 0 and not any(run["errors"].values()), run
    for line in ("misses / nocache", "Redis 0.25 ms away each way", "2 workers"):
        assert line in done.stdout, line


def test_hitprofile_run() -> None:
    """bench/hitprofile.py: a hit's CPU, near-cache on and off, by layer (shares summing to it)."""
    done = subprocess.run([sys.executable, "-m", "bench.hitprofile"], cwd=ROOT, env=_clean_env(),
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "µs of CPU a hit, near-cache on:" in done.stdout and "near-cache off:" in done.stdout
    shares = [int(line.rsplit(None, 2)[-2]) for line in done.stdout.splitlines() if line.endswith("%")]
    assert shares and 195 <= sum(shares) <= 205  # two profiles, each about 100 %
    assert "cachetail's dispatch" in done.stdout and "Starlette" not in done.stdout  # hits skip its layers
