"""The API as operators run it: `python -m api` (workers, metrics summed) and `uvicorn api.app:app`."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.metrics_endpoint import forget_dead_workers
from cachetail.devstack import free_port, terminate
from support.api import api_process
from support.waiting import wait_for


def _clean_env(**env: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("DB_", "REDIS_", "CACHE_", "API_", "ADMIN_", "PROMETHEUS_"))}
    return {**base, **env}


def test_bad_configuration_is_one_line_and_exit_2(stack, tmp_path: Path) -> None:
    env = _clean_env(**{**stack.api_env(), "DB_PORT": "abc"})
    done = subprocess.run([sys.executable, "-m", "api"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "DB_PORT" in lines[0] and "'abc'" in lines[0]
    assert "api-test-pw" not in done.stderr


def test_uvicorn_app_reads_configuration_at_startup(stack, tmp_path: Path) -> None:
    # Importing api.app needs no configuration at all...
    imported = subprocess.run([sys.executable, "-c", "import api.app"], cwd=tmp_path,
                              env=_clean_env(), capture_output=True, text=True, timeout=30)
    assert imported.returncode == 0, imported.stderr
    # ...and the server refuses to start, naming the variable, when it is missing.
    (tmp_path / ".env").write_text("REDIS_PORT=70000\n")
    env = _clean_env(**{k: v for k, v in stack.api_env().items() if k != "REDIS_PORT"})
    done = subprocess.run([sys.executable, "-m", "uvicorn", "api.app:app", "--port",
                           str(free_port())], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode != 0
    assert "REDIS_PORT: expected an integer from 1 to 65535 (got '70000')" in done.stderr
    assert "Traceback" not in done.stderr


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [(s.labels, s.value) for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == name]


def test_two_workers_metrics_add_up(stack, redis_client, tmp_path: Path) -> None:
    metrics_dir = tmp_path / "prom-multiproc"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999999.db").write_bytes(b"stale from a previous run")
    env = _clean_env(**stack.api_env(), PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    requests = 160
    with api_process(env, tmp_path, "--workers", "2") as (url, proc):
        assert not (metrics_dir / "counter_999999999.db").exists()  # cleaned at start

        def fetch(i: int) -> tuple[int, str]:
            # A fresh connection each time, so the kernel spreads them over the workers.
            with httpx.Client(base_url=url, timeout=10) as client:
                response = client.get(f"/user/{1 + i % 40}")
                return response.status_code, response.headers["x-cache"]

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(fetch, range(requests)))
        text = httpx.get(url + "/metrics", timeout=10).text
        stats = httpx.get(url + "/cache/stats", timeout=10).json()
        pids = {m.group(1) for f in metrics_dir.iterdir()
                if (m := re.match(r"counter_(\d+)\.db$", f.name))}
    assert {status for status, _ in answers} == {200}
    served = sum(v for labels, v in _samples(text, "cachetail_http_requests_total")
                 if labels["route"] == "/user/{id}")
    lookups = sum(v for labels, v in _samples(text, "cachetail_cache_lookups_total")
                  if labels["entity"] == "user")
    assert served == requests and lookups == requests
    assert stats["hits"] + stats["misses"] == requests
    assert stats["hits"] == sum(1 for _, x in answers if x == "HIT")
    assert stats["entities"]["user"]["hits"] == stats["hits"] and stats["lists"]["products"]["hits"] == 0
    assert len(pids) == 2, pids  # both workers wrote counters, and the sums include both


def test_live_gauge_files_of_dead_workers_are_forgotten(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = os.getpid()
    for name in (f"gauge_livesum_{dead.pid}.db", f"gauge_livesum_{live}.db",
                 f"counter_{dead.pid}.db"):
        (tmp_path / name).write_bytes(b"")
    assert forget_dead_workers(str(tmp_path)) == [dead.pid]
    left = sorted(f.name for f in tmp_path.iterdir())
    assert left == sorted([f"counter_{dead.pid}.db", f"gauge_livesum_{live}.db"])


def test_uvicorn_app_serves_with_a_dotenv(stack, redis_client, tmp_path: Path) -> None:
    """The lab's way to run it: `uvicorn api.app:app`, configuration in ./.env."""
    port = free_port()
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in stack.api_env().items()))
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.app:app", "--port", str(port)],
                            cwd=tmp_path, env=_clean_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"

        def read() -> httpx.Response | None:
            try:
                return httpx.get(url + "/user/12", timeout=5)
            except httpx.TransportError:
                assert proc.poll() is None, "uvicorn exited"
                return None

        first = wait_for(read, 10, "uvicorn answering", 0.05)
        second = httpx.get(url + "/user/12", timeout=5)
    finally:
        terminate(proc)
    assert (first.status_code, first.headers["x-cache"]) == (200, "MISS")
    assert (second.headers["x-cache"], second.content) == ("HIT", first.content)


@pytest.mark.redis_kinds("single", "cluster")
def test_four_workers_200_cold_reads_of_one_id(stack, redis_client, tmp_path: Path) -> None:
    """200 readers on 200 connections spread over 4 worker processes ask for one cold id
    at once: the lease makes it one SELECT (at most one per worker), and every reader
    gets the same bytes."""
    metrics_dir = tmp_path / "prom-multiproc"
    metrics_dir.mkdir()
    env = _clean_env(**stack.api_env(), PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
                     CACHE_LEASE_WAIT_MS="2000")
    with api_process(env, tmp_path, "--workers", "4") as (url, proc):

        async def stampede() -> list[httpx.Response]:
            clients = [httpx.AsyncClient(base_url=url, timeout=20) for _ in range(200)]
            try:
                # connect first (each connection lands on some worker), then ask all at once
                await asyncio.gather(*(c.get("/health") for c in clients))
                return await asyncio.gather(*(c.get("/user/4321") for c in clients))
            finally:
                await asyncio.gather(*(c.aclose() for c in clients))

        answers = asyncio.run(stampede())
        text = httpx.get(url + "/metrics", timeout=10).text
        pids = {m.group(1) for f in metrics_dir.iterdir()
                if (m := re.match(r"counter_(\d+)\.db$", f.name))}
    assert {a.status_code for a in answers} == {200}
    assert len({a.content for a in answers}) == 1
    selects = sum(v for labels, v in _samples(text, "cachetail_mysql_queries_total")
                  if labels == {"entity": "user", "result": "ok"})
    print(f"200 cold reads over {len(pids)} workers: {selects:.0f} SELECT(s)")
    assert len(pids) >= 2, "the readers did not reach several workers"
    assert 1 <= selects <= 4
