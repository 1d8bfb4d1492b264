"""A real Prometheus server scrapes the API (and the invalidator when it exists): its answer
for the dashboard's hit-ratio query matches the hits and misses this test made, it runs every
dashboard query and rule, and ``promtool check metrics`` accepts the live output.  Until api/
exists, a stand-in process exporting the declared metrics takes the API's place.

A skip happens only where a tool is not installed (Debian package ``prometheus``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import yaml

from cachetail.devstack import free_port, terminate
from deploy_common import DASHBOARD, PROM, RECORDED, alert_rules, dashboard_exprs, instantiate, run, tool, wait_for


# ------------------------------------------------------- a real Prometheus server

@dataclass
class Live:
    prom_url: str
    api_url: str
    invalidator_url: str
    client: httpx.Client
    seen: dict[tuple[str, str], int] = field(default_factory=dict)

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        body = self.client.get(f"{self.prom_url}/api/v1/query", params=params).json()
        assert body["status"] == "success", (expr, body)
        return body["data"]["result"]

    def lookup(self, entity: str, path_or_id: str) -> None:
        """One cached read; counts what the API said it was (X-Cache)."""
        path = f"/user/{path_or_id}" if entity == "user" else f"/products{path_or_id}"
        resp = self.client.get(self.api_url + path)
        assert resp.status_code == 200, (path, resp.status_code, resp.text[:200])
        result = resp.headers["X-Cache"].lower()
        self.seen[(entity, result)] = self.seen.get((entity, result), 0) + 1

    def totals_scraped(self) -> bool:
        got = {(r["metric"]["entity"], r["metric"]["result"]): int(float(r["value"][1]))
               for r in self.query("sum by (entity, result) (cachetail_cache_lookups_total)")}
        return got == self.seen


@pytest.fixture(scope="module")
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    prometheus = tool("prometheus", "prometheus")
    tmp = tmp_path_factory.mktemp("prometheus")
    procs: list[subprocess.Popen[Any]] = []
    client = httpx.Client(timeout=5)
    api_port, inv_port, prom_port = free_port(), free_port(), free_port()
    logs = {name: open(tmp / f"{name}.log", "w") for name in ("api", "invalidator", "prometheus")}
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("DB_", "REDIS_", "CACHE_", "API_", "INVALIDATOR_", "ADMIN_"))}
    try:
        stack = request.getfixturevalue("single_stack")
        import redis as redis_lib
        redis_lib.Redis(host=stack.redis.host, port=stack.redis.port).flushdb()
        env = {**base_env, **stack.api_env(), "API_HOST": "127.0.0.1", "API_PORT": str(api_port)}
        # cwd: an empty folder, so no .env of the checkout is read.
        procs.append(subprocess.Popen([sys.executable, "-m", "api", "--host", "127.0.0.1",
                                       "--port", str(api_port)], env=env, cwd=tmp,
                                      stdout=logs["api"], stderr=subprocess.STDOUT))
        state = tmp / "state"
        state.mkdir()
        env = {**base_env, **stack.invalidator_env(), "INVALIDATOR_METRICS_PORT": str(inv_port),
               "INVALIDATOR_STATE_DIR": str(state)}
        procs.append(subprocess.Popen([sys.executable, "-m", "invalidator"], env=env, cwd=tmp,
                                      stdout=logs["invalidator"], stderr=subprocess.STDOUT))
        api_url = f"http://127.0.0.1:{api_port}"
        inv_url = f"http://127.0.0.1:{inv_port}"
        scrape = [{"job_name": "cachetail-api", "static_configs": [{"targets": [f"127.0.0.1:{api_port}"]}]},
                  {"job_name": "cachetail-invalidator",
                   "static_configs": [{"targets": [f"127.0.0.1:{inv_port}"]}]}]
        shutil.copy(PROM / "alerts.yml", tmp / "alerts.yml")
        (tmp / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": ["alerts.yml"], "scrape_configs": scrape}))
        procs.append(subprocess.Popen(
            [prometheus, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
            cwd=tmp, stdout=logs["prometheus"], stderr=subprocess.STDOUT))
        live = Live(f"http://127.0.0.1:{prom_port}", api_url, inv_url, client)
        wait_for(lambda: client.get(f"{live.prom_url}/-/ready").status_code == 200, 20, "prometheus ready")
        wait_for(lambda: live.query('up{job="cachetail-api"} == 1'), 30, "the API scraped")
        wait_for(lambda: live.query('cachetail_invalidator_streaming{job="cachetail-invalidator"} == 1'),
                 30, "the invalidator streaming, as scraped")
        yield live
    finally:
        for proc in reversed(procs):
            terminate(proc, 10)
        client.close()
        for log in logs.values():
            log.close()


def test_prometheus_hit_ratio_matches_what_the_test_did(live: Live) -> None:
    # Round 1: creates the series (a counter's first sample is never counted by rate()).
    for _ in range(2):
        for uid in ("1", "2", "3"):
            live.lookup("user", uid)
        live.lookup("products", "")
    wait_for(live.totals_scraped, 15, "round 1 scraped")
    t1 = time.time()
    before = dict(live.seen)
    time.sleep(2.5)
    # Round 2: what the rate() window will contain.
    for _ in range(3):
        for uid in ("1", "2", "3"):
            live.lookup("user", uid)
    live.lookup("user", "4")
    live.lookup("user", "5")
    live.lookup("products", "")
    live.lookup("products", "?category=books")
    wait_for(live.totals_scraped, 15, "round 2 scraped")
    delta = {k: v - before.get(k, 0) for k, v in live.seen.items()}
    assert delta.get(("user", "hit"), 0) >= 9 and delta.get(("user", "miss"), 0) >= 2, delta

    # The dashboard's "Hit ratio by entity" panel over exactly round 2: from the
    # last scrape before it to the last scrape after it.  With samples at both
    # ends of the window rate() does not extrapolate, so the ratio is exact.
    samples = live.query('cachetail_cache_lookups_total{entity="user",result="hit"}[60s]')[0]["values"]
    start_ms = max(round(float(ts) * 1000) for ts, _ in samples if float(ts) <= t1)
    end_ms = round(float(samples[-1][0]) * 1000)
    window = f"{end_ms - start_ms + 1}ms"
    panel = next(p for p in json.loads(DASHBOARD.read_text())["panels"] if p["title"] == "Hit ratio by entity")
    got = {r["metric"]["entity"]: float(r["value"][1])
           for r in live.query(instantiate(panel["targets"][0]["expr"], window), at=end_ms / 1000)}
    for entity in ("user", "products"):
        hits, misses = delta.get((entity, "hit"), 0), delta.get((entity, "miss"), 0)
        assert got[entity] == pytest.approx(hits / (hits + misses), abs=1e-9), (entity, got, delta)

    # And since the start, from the raw counters.
    hits = sum(v for (e, r), v in live.seen.items() if r == "hit")
    total = sum(v for (e, r), v in live.seen.items() if r in ("hit", "miss"))
    ratio = live.query('sum(cachetail_cache_lookups_total{result="hit"})'
                       ' / sum(cachetail_cache_lookups_total{result=~"hit|miss"})')
    assert float(ratio[0]["value"][1]) == pytest.approx(hits / total, abs=1e-9)


def test_prometheus_runs_every_dashboard_query_and_rule(live: Live) -> None:
    for expr in dashboard_exprs():
        live.query(instantiate(expr, "1m"))  # asserts status success: the real parser accepts it

    def rules_evaluated() -> list[dict[str, Any]]:
        groups = live.client.get(f"{live.prom_url}/api/v1/rules").json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if rules and all(r.get("lastEvaluation", "").startswith("2") and
                                      not r["lastEvaluation"].startswith("0001") for r in rules) else []

    rules = wait_for(rules_evaluated, 10, "every rule evaluated")
    doc = yaml.safe_load((PROM / "alerts.yml").read_text())
    recorded = {rule["record"] for group in doc["groups"] for rule in group["rules"] if "record" in rule}
    assert recorded == RECORDED
    assert {r["name"] for r in rules} == {r["alert"] for r in alert_rules()} | recorded
    assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []


def test_promtool_check_metrics_on_live_output(live: Live) -> None:
    promtool = tool("promtool", "prometheus")
    for url in (live.api_url, live.invalidator_url):
        text = live.client.get(f"{url}/metrics").text
        assert "cachetail_" in text
        result = run(promtool, "check", "metrics", input=text)
        assert result.returncode == 0, f"{url}: {result.stdout}{result.stderr}"
