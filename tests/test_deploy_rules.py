"""deploy/prometheus and deploy/grafana checked by promtool and against metrics/:
``promtool check config``, ``check rules``, ``test rules`` (every alert has a case that fires
and one that does not, and a heading in docs/runbook.md); every metric name and label in the
rules and the dashboard is declared in metrics/api.py or metrics/invalidator.py; the dashboard
imports with a data source variable.

A skip happens only where a tool is not installed (Debian package ``prometheus``).
"""

from __future__ import annotations

import json
import re

import yaml
from prometheus_client.metrics import MetricWrapperBase

import metrics.api
import metrics.invalidator
from deploy_common import DASHBOARD, DEPLOY, PROM, RECORDED, alert_rules, all_exprs, dashboard_exprs, run, tool


# --------------------------------------------------------------------- promtool


def test_promtool_check_config() -> None:
    promtool = tool("promtool", "prometheus")
    result = run(promtool, "check", "config", PROM / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_rules() -> None:
    promtool = tool("promtool", "prometheus")
    result = run(promtool, "check", "rules", PROM / "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules() -> None:
    promtool = tool("promtool", "prometheus")
    result = run(promtool, "test", "rules", PROM / "alerts_test.yml", cwd=PROM)
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


def test_every_alert_is_documented_and_tested_both_ways() -> None:
    rules = alert_rules()
    names = {rule["alert"] for rule in rules}
    assert {"CachetailInvalidatorDown", "CachetailInvalidatorNotStreaming", "CachetailInvalidatorStalled",
            "CachetailInvalidatorLagging", "CachetailFullInvalidation", "CachetailLowHitRate",
            "CachetailApi5xx", "CachetailRedisBypass", "CachetailMySQLErrors"} <= names
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert {"summary", "description", "runbook"} <= rule["annotations"].keys(), rule["alert"]
        assert rule["annotations"]["runbook"] == f"docs/runbook.md#{rule['alert'].lower()}", rule["alert"]
    doc = yaml.safe_load((PROM / "alerts_test.yml").read_text())
    fires, quiet = set(), set()
    for case in doc["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    assert names - fires == set(), "alerts without a case that fires"
    assert names - quiet == set(), "alerts without a case that must not fire"
    runbook = (DEPLOY.parent / "docs" / "runbook.md").read_text()
    assert [n for n in names if f"\n## {n}\n" not in runbook] == [], "alerts without a heading in docs/runbook.md"


# ------------------------------------------------------------- metric names used

ALLOWED_FOREIGN = {"up"}
COMMON_LABELS = {"job", "instance", "service", "le"}


def declared_metrics() -> dict[str, set[str]]:
    """Sample name -> label names, for every metric declared in metrics/."""
    samples: dict[str, set[str]] = {}
    for module in (metrics.api, metrics.invalidator):
        for obj in vars(module).values():
            if not isinstance(obj, MetricWrapperBase):
                continue
            labels = set(obj._labelnames)
            for family in obj.describe():
                suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"],
                            "gauge": [""], "summary": ["_sum", "_count"]}[family.type]
                for suffix in suffixes:
                    samples[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return samples


def strip_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def test_every_metric_and_label_used_is_declared() -> None:
    declared = declared_metrics()
    assert "cachetail_cache_lookups_total" in declared  # the declarations were read
    problems = []
    for expr in all_exprs():
        bare = strip_strings(expr)
        used = set(re.findall(r"\b(cachetail_[a-zA-Z0-9_]+)", bare))
        recorded = set(re.findall(r"\b(cachetail:[a-zA-Z0-9_:]+)", bare))
        assert used or recorded or "up{" in bare, f"no cachetail metric in {expr!r}"
        problems += [f"{name} is no recording rule (in {expr!r})" for name in recorded if name not in RECORDED]
        problems += [f"{name} (in {expr!r})" for name in used if name not in declared]
        for name, matchers in re.findall(r"\b([a-zA-Z_][a-zA-Z0-9_]*)\{([^}]*)\}", bare):
            known = declared.get(name, set()) | COMMON_LABELS
            if name not in declared and name not in ALLOWED_FOREIGN:
                continue
            problems += [f"label {lb} of {name}" for lb in re.findall(r"(\w+)\s*[=!]~?", matchers)
                         if lb not in known]
        # by/without/on/ignoring labels must exist on some metric of the expression.
        known_here = set().union(*(declared.get(n, set()) for n in used)) | COMMON_LABELS
        for group in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", bare):
            problems += [f"grouping label {lb} in {expr!r}" for lb in re.findall(r"\w+", group)
                         if lb not in known_here]
    assert problems == []


def test_rules_use_the_scrape_config_job_names() -> None:
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert jobs == {"cachetail-api", "cachetail-invalidator"}
    used = set(re.findall(r'job="([^"]+)"', " ".join(all_exprs())))
    assert used and used <= jobs


# --------------------------------------------------------------------- dashboard


def test_dashboard_is_importable_with_datasource_variable() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in dash["panels"]:
        g = panel["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
        assert panel["targets"] and panel.get("description"), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}"
    text = " ".join(all_exprs())
    for needle in ("cachetail_cache_lookups_total", "cachetail_cache_lookup_duration_seconds_bucket",
                   "cachetail_http_request_duration_seconds_bucket", "cachetail_mysql_queries_total",
                   'result="bypass"', "cachetail_redis_errors_total", "cachetail_invalidator_seconds_behind",
                   "cachetail_invalidator_commit_to_applied_seconds_bucket",
                   "cachetail_invalidator_row_events_total", "cachetail_invalidator_keys_total",
                   "cachetail_invalidator_reconnects_total", "cachetail_invalidator_full_invalidations_total"):
        assert needle in " ".join(dashboard_exprs()), needle
    assert text
