"""Paths and helpers shared by the deploy/ tests (tests/test_deploy_*.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNITS = DEPLOY / "systemd"
PROM = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "cachetail.json"
UNIT_NAMES = ("cachetail-api.service", "cachetail-invalidator.service")


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian package {package})")
    return path


def run(*cmd: str | Path, timeout: float = 30, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)


def wait_for(predicate: Any, timeout_s: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (httpx.HTTPError, OSError, KeyError, IndexError, ValueError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"{what} within {timeout_s} s (last: {last!r})")


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROM / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in dash["annotations"]["list"] if "expr" in a]
    return exprs


def all_exprs() -> list[str]:
    return [r["expr"] for r in alert_rules()] + dashboard_exprs()


def instantiate(expr: str, window: str) -> str:
    """A dashboard expression as Grafana would send it."""
    return (expr.replace("$__rate_interval", window).replace("$__interval", window)
            .replace("$__range", window))


RECORDED = {"cachetail:audit_consistency:ratio_1h", "cachetail:audit_consistency:nines_1h"}
