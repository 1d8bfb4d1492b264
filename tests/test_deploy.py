"""deploy/ checked by the real tools: systemd-analyze, promtool, a Prometheus server.

- The units pass ``systemd-analyze verify`` and score at most 2.0 in
  ``systemd-analyze security --offline``; Python and the project's native
  modules run under the units' own seccomp policy (SystemCallFilter,
  MemoryDenyWriteExecute, RestrictAddressFamilies), rebuilt here with libseccomp.
- ``promtool check config``, ``check rules``, ``test rules`` (every alert has a
  case that fires and one that does not), ``check metrics`` on live output.
- Every metric name and label in the rules and the dashboard is declared in
  metrics/api.py or metrics/invalidator.py.
- A real Prometheus scrapes the API (and the invalidator when it exists) and its
  answer for the dashboard's hit-ratio query matches the hits and misses this
  test made.  Until api/ exists, a stand-in process exporting the declared
  metrics takes the API's place.

A skip happens only where a tool is not installed (Debian packages ``systemd``
for systemd-analyze, ``prometheus`` for promtool and the server).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

import metrics.api
import metrics.invalidator
from cachetail.devstack import free_port, terminate

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNITS = DEPLOY / "systemd"
PROM = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "cachetail.json"
UNIT_NAMES = ("cachetail-api.service", "cachetail-invalidator.service")
MAX_EXPOSURE = 2.0


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


# --------------------------------------------------------------------------- units


def unit_settings(path: Path) -> dict[str, list[str]]:
    """Key -> values of a unit file, in order (keys repeat in unit files)."""
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


@pytest.fixture(scope="module")
def runnable_units(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The units with /opt/cachetail/.venv/bin/ pointed at this checkout's console scripts.

    verify checks that ExecStart's binary exists and is executable; everything
    else in the files is left as shipped.
    """
    venv_bin = Path(sys.executable).parent
    out = tmp_path_factory.mktemp("units")
    for name in UNIT_NAMES:
        text = (UNITS / name).read_text()
        assert "ExecStart=/opt/cachetail/.venv/bin/" in text, f"{name}: ExecStart outside the documented venv"
        for script in re.findall(r"ExecStart=/opt/cachetail/\.venv/bin/(\S+)", text):
            assert (venv_bin / script).is_file(), f"console script {script} missing from {venv_bin}"
        (out / name).write_text(text.replace("/opt/cachetail/.venv/bin/", f"{venv_bin}/"))
    return out


def test_units_pass_systemd_analyze_verify(runnable_units: Path) -> None:
    analyze = tool("systemd-analyze", "systemd")
    result = run(analyze, "verify", "--man=no", *(runnable_units / n for n in UNIT_NAMES))
    # verify exits 0 on unknown keys and only warns, so stderr must be empty too.
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr + result.stdout


@pytest.mark.parametrize("name", UNIT_NAMES)
def test_unit_exposure_at_most_2(runnable_units: Path, name: str) -> None:
    analyze = tool("systemd-analyze", "systemd")
    result = run(analyze, "security", "--offline=yes", f"--threshold={int(MAX_EXPOSURE * 10)}",
                 "--no-pager", runnable_units / name)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    exposure = float(found.group(1))
    print(f"{name}: exposure {exposure}")
    assert exposure <= MAX_EXPOSURE, result.stdout
    assert result.returncode == 0, result.stdout + result.stderr


def test_units_carry_the_agreed_settings() -> None:
    api = unit_settings(UNITS / "cachetail-api.service")
    inv = unit_settings(UNITS / "cachetail-invalidator.service")
    for unit in (api, inv):
        assert unit["EnvironmentFile"][0] == "/etc/cachetail/cachetail.env"
        assert unit["Restart"] == ["on-failure"]
        assert unit.get("DynamicUser") == ["yes"] or unit.get("User") == ["cachetail"]
        assert unit["CapabilityBoundingSet"] == [""]
        assert unit["MemoryDenyWriteExecute"] == ["yes"]
        assert unit["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
        assert unit["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    assert api["Type"] == ["exec"]
    assert api["ExecStart"] == ["/opt/cachetail/.venv/bin/cachetail-api --workers 2"]
    assert "PROMETHEUS_MULTIPROC_DIR=%t/cachetail-api" in api["Environment"]
    assert api["RuntimeDirectory"] == ["cachetail-api"]
    assert inv["Type"] == ["notify"] and inv["NotifyAccess"] == ["main"]
    assert inv["ExecStart"] == ["/opt/cachetail/.venv/bin/invalidator"]
    assert inv["WatchdogSec"] and inv["StateDirectory"] == ["cachetail-invalidator"]
    assert "INVALIDATOR_STATE_DIR=%S/cachetail-invalidator" in inv["Environment"]


# ------------------------------------------- the units' seccomp policy, rebuilt

# Run as `python SANDBOX <unit file> <program> <args...>`: loads the seccomp
# filter systemd 252 derives from the unit's SystemCallFilter=,
# MemoryDenyWriteExecute= (seccomp-based in this version: no W+X mmap, no
# mprotect to executable, no SHM_EXEC) and RestrictAddressFamilies=, then execs.
SANDBOX = textwrap.dedent(
    """
    import ctypes, errno, os, socket, subprocess, sys

    ALLOW, CMP_EQ, CMP_MASKED_EQ = 0x7FFF0000, 4, 7
    PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000

    def expand(group, seen):
        out = subprocess.run(["systemd-analyze", "syscall-filter", group],
                             capture_output=True, text=True, check=True).stdout
        names = set()
        for line in out.splitlines()[1:]:
            line = line.strip()
            if line.startswith("@") and line not in seen:
                seen.add(line)
                names |= expand(line, seen)
            elif line and not line.startswith("#"):
                names.add(line)
        return names

    def names(spec):
        out = set()
        for item in spec.split():
            out |= expand(item, set()) if item.startswith("@") else {item}
        return out

    allowed, families, mdwe = set(), [], False
    for line in open(sys.argv[1]):
        key, _, value = line.strip().partition("=")
        if key == "SystemCallFilter":
            allowed = allowed - names(value[1:]) if value.startswith("~") else allowed | names(value)
        elif key == "RestrictAddressFamilies":
            families = [getattr(socket, f) for f in value.split()]
        elif key == "MemoryDenyWriteExecute":
            mdwe = value == "yes"

    class Cmp(ctypes.Structure):
        _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                    ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]

    lib = ctypes.CDLL("libseccomp.so.2")
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(Cmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(0x00050000 | errno.EPERM)   # SystemCallErrorNumber=EPERM

    def rule(name, *cmps):
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:
            return   # not a syscall of this architecture
        arr = (Cmp * max(1, len(cmps)))(*cmps)
        rc = lib.seccomp_rule_add_array(ctx, ALLOW, nr, len(cmps), arr)
        if rc < 0:
            raise OSError(-rc, "seccomp_rule_add " + name)

    special = {"mmap", "mprotect", "pkey_mprotect", "shmat", "socket"} if mdwe else {"socket"}
    for name in sorted(allowed - special):
        rule(name)
    if mdwe:
        for prot in (0, PROT_WRITE, PROT_EXEC):
            rule("mmap", Cmp(2, CMP_MASKED_EQ, PROT_WRITE | PROT_EXEC, prot))
        rule("mprotect", Cmp(2, CMP_MASKED_EQ, PROT_EXEC, 0))
        rule("pkey_mprotect", Cmp(2, CMP_MASKED_EQ, PROT_EXEC, 0))
        rule("shmat", Cmp(2, CMP_MASKED_EQ, SHM_EXEC, 0))
    for family in families:
        rule("socket", Cmp(0, CMP_EQ, family, 0))
    rc = lib.seccomp_load(ctx)
    if rc < 0:
        raise OSError(-rc, "seccomp_load")
    os.execv(sys.argv[2], sys.argv[2:])
    """
)

# What the services load, and the ways Python could need W+X memory.
PROBE = textwrap.dedent(
    """
    import ctypes, mmap, socket, ssl, json
    import uvloop, httptools, hiredis, pymysql, redis, starlette, uvicorn, prometheus_client
    import pymysqlreplication, dotenv, dbutils
    import cachetail.settings, cachetail.keyspace, metrics.api, metrics.invalidator
    callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)
    assert callback(41) == 42
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        wx = "allowed"
    except OSError:
        wx = "denied"
    try:
        socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)
        netlink = "allowed"
    except OSError:
        netlink = "denied"
    import asyncio
    uvloop.install()
    asyncio.run(asyncio.sleep(0))
    print(json.dumps({"wx": wx, "netlink": netlink}))
    """
)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tool("systemd-analyze", "systemd")
    if platform.machine() != "x86_64" or ctypes.util.find_library("seccomp") is None:
        pytest.skip("the seccomp rebuild needs x86_64 and libseccomp2")
    path = tmp_path_factory.mktemp("sandbox") / "sandbox.py"
    path.write_text(SANDBOX)
    return path


@pytest.mark.parametrize("name", UNIT_NAMES)
def test_python_runs_under_the_units_seccomp_policy(sandbox: Path, name: str) -> None:
    result = run(sys.executable, sandbox, UNITS / name, sys.executable, "-c", PROBE, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    # The filter really is in force: writable+executable memory and netlink are refused.
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"wx": "denied", "netlink": "denied"}


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


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROM / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


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


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in dash["annotations"]["list"] if "expr" in a]
    return exprs


def all_exprs() -> list[str]:
    return [r["expr"] for r in alert_rules()] + dashboard_exprs()


def strip_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


RECORDED = {"cachetail:audit_consistency:ratio_1h", "cachetail:audit_consistency:nines_1h"}


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


def instantiate(expr: str, window: str) -> str:
    """A dashboard expression as Grafana would send it."""
    return (expr.replace("$__rate_interval", window).replace("$__interval", window)
            .replace("$__range", window))


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
