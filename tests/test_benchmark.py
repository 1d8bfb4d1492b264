"""benchmark.py: its metrics-diff and percentile code on inputs with known answers, its
JSON and chart output, and a --quick run against a real throwaway stack."""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench import charts, report
from bench.freshness import Read, Write, analyze, version_of
from bench.load import Mix, Samples, split, zipf_cumulative
from bench.promdiff import counts_from_buckets, diff, histogram_quantile, parse
from bench.stats import cdf_points, first_time_at_least, percentile, summarize, windows
from cachetail.devstack import free_port
from support.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
INF = float("inf")

BEFORE = """\
# HELP cachetail_cache_lookups_total Cache lookups.
# TYPE cachetail_cache_lookups_total counter
cachetail_cache_lookups_total{entity="user",result="hit"} 10.0
cachetail_cache_lookups_total{entity="user",result="miss"} 5.0
cachetail_cache_lookups_total{entity="products",result="hit"} 1.0
# HELP cachetail_lag Seconds behind.
# TYPE cachetail_lag gauge
cachetail_lag 7.0
# HELP cachetail_d_seconds A histogram.
# TYPE cachetail_d_seconds histogram
cachetail_d_seconds_bucket{route="/a",le="0.1"} 1.0
cachetail_d_seconds_bucket{route="/a",le="0.2"} 1.0
cachetail_d_seconds_bucket{route="/a",le="0.5"} 1.0
cachetail_d_seconds_bucket{route="/a",le="+Inf"} 1.0
cachetail_d_seconds_count{route="/a"} 1.0
cachetail_d_seconds_sum{route="/a"} 0.05
cachetail_d_seconds_created{route="/a"} 1.7e9
"""

AFTER = """\
# TYPE cachetail_cache_lookups_total counter
cachetail_cache_lookups_total{entity="user",result="hit"} 40.0
cachetail_cache_lookups_total{entity="user",result="miss"} 15.0
cachetail_cache_lookups_total{entity="user",result="bypass"} 2.0
cachetail_cache_lookups_total{entity="products",result="hit"} 4.0
# TYPE cachetail_lag gauge
cachetail_lag 3.0
# TYPE cachetail_d_seconds histogram
cachetail_d_seconds_bucket{route="/a",le="0.1"} 1.0
cachetail_d_seconds_bucket{route="/a",le="0.2"} 51.0
cachetail_d_seconds_bucket{route="/a",le="0.5"} 101.0
cachetail_d_seconds_bucket{route="/a",le="+Inf"} 101.0
cachetail_d_seconds_count{route="/a"} 101.0
cachetail_d_seconds_sum{route="/a"} 30.05
cachetail_d_seconds_bucket{route="/b",le="0.1"} 100.0
cachetail_d_seconds_bucket{route="/b",le="0.2"} 100.0
cachetail_d_seconds_bucket{route="/b",le="0.5"} 100.0
cachetail_d_seconds_bucket{route="/b",le="+Inf"} 100.0
cachetail_d_seconds_count{route="/b"} 100.0
cachetail_d_seconds_sum{route="/b"} 5.0
"""


# ---------------------------------------------------------------- metrics diff


def test_diff_of_counters_gauges_and_new_series() -> None:
    d = diff(parse(BEFORE), parse(AFTER))
    assert d.value("cachetail_cache_lookups_total") == 45  # 30 + 10 + 2 (new) + 3
    assert d.by("cachetail_cache_lookups_total", "result", entity="user") == {
        "hit": 30, "miss": 10, "bypass": 2}
    assert d.value("cachetail_cache_lookups_total", entity="products") == 3
    assert d.value("cachetail_lag") == 3.0  # a gauge keeps its value after the phase
    assert not d.has("cachetail_d_seconds_created")


def test_counter_reset_counts_the_new_value() -> None:
    before = parse('# TYPE x_total counter\nx_total 100\n')
    after = parse('# TYPE x_total counter\nx_total 7\n')
    assert diff(before, after).value("x_total") == 7


def test_histogram_quantiles_from_bucket_deltas() -> None:
    d = diff(parse(BEFORE), parse(AFTER))
    a = d.buckets("cachetail_d_seconds", route="/a")
    assert a == [(0.1, 0.0), (0.2, 50.0), (0.5, 100.0), (INF, 100.0)]
    assert d.quantile("cachetail_d_seconds", 0.5, route="/a") == pytest.approx(0.2)
    assert d.quantile("cachetail_d_seconds", 0.25, route="/a") == pytest.approx(0.15)
    assert d.quantile("cachetail_d_seconds", 0.75, route="/a") == pytest.approx(0.35)
    assert d.mean("cachetail_d_seconds", route="/a") == pytest.approx(0.3)
    # Both routes together: 100 observations under 0.1 s (route b) + 100 of route a.
    assert d.quantile("cachetail_d_seconds", 0.25) == pytest.approx(0.05)
    assert d.quantile("cachetail_d_seconds", 0.75) == pytest.approx(0.2)


def test_histogram_quantile_edges() -> None:
    assert histogram_quantile(0.5, []) is None
    assert histogram_quantile(0.5, [(0.1, 0), (INF, 0)]) is None
    # Ranks in the +Inf bucket answer the highest finite bound, as PromQL does.
    assert histogram_quantile(0.99, [(0.1, 10), (INF, 20)]) == 0.1
    assert histogram_quantile(1.0, [(0.1, 0), (0.2, 50), (0.5, 100), (INF, 100)]) == 0.5
    with pytest.raises(ValueError):
        histogram_quantile(1.5, [(INF, 1)])
    assert counts_from_buckets([(0.1, 2), (0.2, 5), (INF, 6)]) == [
        (0.0, 0.1, 2), (0.1, 0.2, 3), (0.2, INF, 1)]


# ---------------------------------------------------------------- statistics


def test_percentiles_known_answers() -> None:
    data = list(range(1, 101))  # 1..100
    assert percentile(data, 0.5) == pytest.approx(50.5)
    assert percentile(data, 0.9) == pytest.approx(90.1)
    assert percentile(data, 0.99) == pytest.approx(99.01)
    assert percentile(data, 0.0) == 1 and percentile(data, 1.0) == 100
    assert percentile([3.0], 0.99) == 3.0
    assert math.isnan(percentile([], 0.5))
    assert percentile([5, 1, 3], 0.5) == 3  # unsorted input
    s = summarize([0.004, 0.001, 0.002, 0.003], elapsed_s=2.0)
    assert s["count"] == 4 and s["throughput_rps"] == 2.0
    assert s["p50_s"] == pytest.approx(0.0025) and s["max_s"] == 0.004
    assert s["mean_s"] == pytest.approx(0.0025)
    assert summarize([])["p99_s"] is None


def test_windows_cdf_and_time_to_target() -> None:
    w = windows([10.0, 10.2, 11.7, 13.1], [1, 2, 3, 4], 1.0, t0=10.0)
    assert w == [(0.0, [1, 2]), (1.0, [3]), (2.0, []), (3.0, [4])]
    x, y = cdf_points([3, 1, 2, 4], points=10)
    assert x == [1, 2, 3, 4] and y == [0.25, 0.5, 0.75, 1.0]
    series = [(0, 0.5), (1, 0.82), (2, 0.79), (3, 0.85), (4, 0.9)]
    assert first_time_at_least(series, 0.8) == 1
    assert first_time_at_least(series, 0.8, sustain=2) == 3
    assert first_time_at_least(series, 0.95) is None


def test_load_helpers() -> None:
    assert split(16, 3) == [6, 5, 5] and split(2, 8) == [1, 1]
    cum = zipf_cumulative(3, 1.0)
    assert cum == pytest.approx([1.0, 1.5, 1.5 + 1 / 3])
    pick = Mix(users=100, products_share=0.5, seed=3).picker(0)
    paths = [pick()[0] for _ in range(400)]
    assert any(p.startswith("/products?category=") for p in paths)
    assert any(p == "/products" for p in paths)
    users = [int(p.rsplit("/", 1)[1]) for p in paths if p.startswith("/user/")]
    assert users and all(1 <= u <= 100 for u in users)
    s = Samples()
    s.add(1.0, 0.01, 200, "HIT", 0)
    s.add(1.1, 0.02, 200, "MISS", 0)
    s.add(1.2, 0.03, 503, "", 1)
    assert s.cache_counts() == {"hit": 1, "miss": 1, "bypass": 0, "none": 1}
    assert s.status_counts() == {"200": 2, "503": 1}
    assert s.select("user") == [0.01, 0.02]


# ---------------------------------------------------------------- freshness analysis


def test_freshness_analysis_known_answers() -> None:
    writes = [Write(1, 1, 10.0), Write(1, 2, 12.0), Write(2, 1, 10.5)]
    reads = [
        Read(1, 9.9, 10.0, 0, "HIT"),     # before the commit: fine
        Read(1, 10.01, 10.02, 0, "HIT"),  # old, but within the bound
        Read(1, 10.02, 10.05, 1, "MISS"),  # v1 seen 50 ms after its commit
        Read(1, 11.5, 11.6, 0, "HIT"),    # old again: went back, and stale past the 1 s bound
        Read(1, 12.1, 12.2, 2, "MISS"),   # v2 seen 200 ms after
        Read(2, 12.0, 12.1, 1, "HIT"),    # v2 of user 2 seen 1.6 s after its commit
    ]
    r = analyze(writes, reads, bound_s=1.0)
    assert r["writes"] == 3 and r["reads"] == 6
    assert r["end_to_end_s"] == pytest.approx([0.05, 0.2, 1.6])
    assert r["writes_never_seen"] == 0
    assert r["stale_reads_after_bound"] == 1
    assert r["reads_older_than_already_seen"] == 1
    assert r["stale_examples"][0]["id"] == 1
    assert analyze([Write(3, 1, 1.0)], [], 1.0)["writes_never_seen"] == 1
    assert version_of(b'{"id":1,"full_name":"bench 123 v7"}', "123") == 7
    assert version_of(b'{"id":1,"full_name":"bench 999 v7"}', "123") == 0
    assert version_of(b'{"id":1,"full_name":"Ada Lovelace"}', "123") == 0


# ---------------------------------------------------------------- JSON and charts


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_json_is_strict_and_charts_are_pngs(tmp_path: Path) -> None:
    results = {"a": math.nan, "b": [INF, 1.5], "c": {"d": (1, 2)}}
    path = report.write_json(results, tmp_path / "results.json")
    assert json.loads(path.read_text(), parse_constant=_no_constants) == {
        "a": None, "b": ["+Inf", 1.5], "c": {"d": [1, 2]}}
    cdf = charts.latency_cdf({"nocache": [0.01, 0.012, 0.02], "warm": [0.001, 0.0012], "empty": []},
                             tmp_path / "cdf.png")
    warming = {"timeline": [{"t_s": 0, "hit_rate": 0.4, "p50_s": 0.01, "p99_s": 0.05},
                            {"t_s": 1, "hit_rate": 0.85, "p50_s": 0.002, "p99_s": 0.02},
                            {"t_s": 2, "hit_rate": None, "p50_s": None, "p99_s": None}],
               "server_timeline": [{"t_s": 0, "hit_rate": 0.5}], "time_to_target_s": 1.0,
               "target_hit_rate": 0.8}
    warm = charts.warming(warming, tmp_path / "warming.png")
    fresh = charts.freshness([0.005, 0.01, 0.02], {
        "bound_s": 1.0, "stale_reads_after_bound": 0,
        "invalidator_buckets": {"received_to_applied": [(0.001, 2), (0.01, 3), (INF, 3)],
                                "commit_to_applied": [(0.001, 0), (0.01, 0), (INF, 3)]}},
        tmp_path / "fresh.png")
    for p in (cdf, warm, fresh):
        assert p is not None
        w, h = _png_size(p)
        assert w > 100 and h > 100
    assert charts.latency_cdf({}, tmp_path / "none.png") is None


def _no_constants(name: str) -> None:
    raise AssertionError(f"results.json holds {name}, which is not JSON")


# ---------------------------------------------------------------- a real --quick run


def _wait_http(url: str, proc: subprocess.Popen, what: str, timeout_s: float = 30) -> None:
    def answers() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}")
        return httpx.get(url, timeout=1).status_code == 200
    wait_for(answers, timeout_s, f"{what} to answer at {url}", interval=0.2, ignoring=(httpx.HTTPError,))


@pytest.fixture(scope="module")
def running(single_stack, tmp_path_factory) -> Iterator[dict[str, str]]:
    """The API and the invalidator as subprocesses on free ports against the session's stack."""
    stack = single_stack
    work = tmp_path_factory.mktemp("bench-run")  # no .env here: settings come from env
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("DB_", "REDIS_", "CACHE_", "ADMIN_", "INVALIDATOR_", "API_"))}
    base["PYTHONPATH"] = str(ROOT)
    api_port, inv_port = free_port(), free_port()
    api = subprocess.Popen([sys.executable, "-m", "api", "--port", str(api_port), "--no-access-log",
                            "--log-level", "warning"], cwd=work, env={**base, **stack.api_env()},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    inv_env = {**base, **stack.invalidator_env(), "INVALIDATOR_METRICS_PORT": str(inv_port),
               "INVALIDATOR_STATE_DIR": str(work / "invalidator")}
    inv = subprocess.Popen([sys.executable, "-m", "invalidator"], cwd=work, env=inv_env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        api_url, inv_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{inv_port}"
        _wait_http(f"{api_url}/health", api, "the API")
        _wait_http(f"{inv_url}/metrics", inv, "the invalidator")
        yield {"api": api_url, "inv": inv_url, "work": str(work), "env": base,
               "token": stack.base_env()["ADMIN_TOKEN"],
               "db": f"mysql://root@{stack.mariadb.host}:{stack.mariadb.port}/cachelab"}
    finally:
        for p in (api, inv):
            p.terminate()
        for p in (api, inv):
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


def _bench(running: dict, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmark.py"), *args], cwd=running["work"],
                          env=running["env"], capture_output=True, text=True, timeout=timeout)


def test_quick_run_against_a_real_stack(running: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    started = time.monotonic()
    r = _bench(running, "--quick", "--api-url", running["api"], "--invalidator-url", running["inv"],
               "--admin-token", running["token"], "--db-url", running["db"], "--out", str(out))
    elapsed = time.monotonic() - started
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    assert elapsed < 45, f"--quick took {elapsed:.0f} s"
    assert "uncached vs cached" in r.stdout and "freshness" in r.stdout
    res = json.loads((out / "results.json").read_text(), parse_constant=_no_constants)
    assert set(res["scenarios"]) == {"uncached", "warming", "stampede", "freshness"}
    assert res["environment"]["versions"]["prometheus-client"]
    assert res["client_ceiling"]["throughput_rps"] > 0

    un = res["scenarios"]["uncached"]
    assert un["nocache"]["client"]["count"] > 0 and un["cached"]["client"]["count"] > 0
    assert un["nocache"]["server"]["selects"] > 0          # every nocache read is a SELECT
    assert un["cached"]["server"]["selects"] == 0          # warm: none
    assert un["cached"]["server"]["lookups"]["hit"] > 0
    assert un["cached"]["client"]["x_cache"]["hit"] == un["cached"]["client"]["count"]
    assert un["speedup"]["p50"] > 0

    warm = res["scenarios"]["warming"]
    assert warm["cleared_keys"] >= 0 and warm["timeline"]
    lk = warm["server"]["lookups"]
    assert lk["miss"] > 0 and lk["hit"] > 0
    assert 0 < warm["final_hit_rate"] <= 1

    st = res["scenarios"]["stampede"]
    assert st["n"] == 200 and st["rounds"][0]["requests"] == 200
    assert 1 <= st["max_selects"] <= 5, st["selects_per_round"]

    fr = res["scenarios"]["freshness"]
    assert fr["writes"] > 0 and fr["reads"] > 0
    assert fr["invalidator"]["transactions"] >= fr["writes"]
    assert fr["invalidator"]["audit_checks"].get("consistent", 0) > 0  # the auditor ran, in the leader
    assert fr["invalidator"]["audit_checks"].get("inconsistent", 0) == 0
    assert "auditor checks / inconsistent" in r.stdout
    assert fr["end_to_end"]["count"] > 0
    assert fr["final_stale"] == []

    assert set(res["charts"]) == {"latency_cdf", "warming", "freshness"}
    for name in res["charts"].values():
        w, h = _png_size(out / name)
        assert w > 100 and h > 100


def test_clear_errors_when_the_stack_cannot_be_used(running: dict, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    r = _bench(running, "--quick", "--api-url", dead, "--out", str(tmp_path / "a"), timeout=30)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "does not answer" in r.stderr and dead in r.stderr

    r = _bench(running, "--quick", "--api-url", running["api"], "--invalidator-url", dead,
               "--admin-token", running["token"], "--db-url", running["db"],
               "--out", str(tmp_path / "b"), timeout=30)
    assert r.returncode == 2 and "invalidator does not answer" in r.stderr

    r = _bench(running, "--scenarios", "stampede", "--api-url", running["api"],
               "--admin-token", "wrong", "--out", str(tmp_path / "c"), timeout=30)
    assert r.returncode == 2 and "token was refused" in r.stderr
    assert r.stderr.strip().count("\n") == 0


def test_scaleout_quick_run(tmp_path: Path) -> None:
    """bench/scaleout.py end to end at smoke size: its own servers, a cluster, two invalidators."""
    out = tmp_path / "scaleout.json"
    done = subprocess.run([sys.executable, "-m", "bench.scaleout", "--quick", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    figures = json.loads(out.read_text())
    for near in ("near", "nonear"):
        assert figures["hits"][near]["single"]["throughput_rps"] > 0
        assert figures["hits"][near]["cluster"]["throughput_rps"] > 0
        assert len(figures["hits"][near]["ratio_per_round"]) == 2
    lists = figures["hits"]["lists"]
    # 11 variants, a generation and a page each, a hash slot each: spread over the primaries
    assert sum(lists["keys_per_primary"].values()) == 22
    assert sum(1 for n in lists["keys_per_primary"].values() if n) >= 2
    assert sum(1 for n in lists["reads_per_primary"].values() if n) >= 2
    assert all(1 <= n <= 4 for kind in ("single", "cluster") for n in figures["stampede"][kind])
    assert figures["takeover"]["kills"] == 2
    assert 0 < figures["takeover"]["to_change_applied_s"]["max"] < 10
    assert "ratio cluster / single" in done.stdout
