"""Generate deploy/prometheus/alerts_test.yml; annotations are filled from promtool's rendering."""
import json
import os
import re
import subprocess
import sys
import tempfile

import yaml

PROMETHEUS = __import__("pathlib").Path(__file__).resolve().parents[1] / "prometheus"
OUT = str(PROMETHEUS / "alerts_test.yml")
INV = 'job="cachetail-invalidator",instance="inv1:9101"'
INV2 = 'job="cachetail-invalidator",instance="inv2:9101"'
INV3 = 'job="cachetail-invalidator",instance="inv3:9101"'
API = 'job="cachetail-api",instance="api1:5000"'
BASE = {"service": "cachetail"}
def lab(job=None, instance=None, **kw):
    d = dict(kw)
    if job: d["job"] = job
    if instance: d["instance"] = instance
    return d
IJ = "cachetail-invalidator"; AJ = "cachetail-api"
def a(sev, **labels): return {"exp_labels": {"severity": sev, "service": "cachetail", **labels}}

tests = []
def T(comment, series, evals):
    tests.append((comment, {"interval": "1m", "input_series": [{"series": s, "values": v} for s, v in series],
                            "alert_rule_test": [{"eval_time": t, "alertname": n, "exp_alerts": e} for t, n, e in evals]}))

T("invalidator target down: pending for 2 minutes, then firing; the API stays up",
  [(f"up{{{INV}}}", "1 1 0x10"), (f"up{{{API}}}", "1x12")],
  [("1m", "CachetailInvalidatorDown", []), ("3m", "CachetailInvalidatorDown", []),
   ("5m", "CachetailInvalidatorDown", [a("critical", job=IJ, instance="inv1:9101")]),
   ("5m", "CachetailApiDown", [])])
T("invalidator not scraped at all (absent) and the API down",
  [(f"up{{{API}}}", "1 0x10")],
  [("1m", "CachetailInvalidatorDown", []),
   ("4m", "CachetailInvalidatorDown", [a("critical", job=IJ)]),
   ("2m", "CachetailApiDown", []),
   ("4m", "CachetailApiDown", [a("critical", job=AJ, instance="api1:5000")])])
T("not streaming for 2 minutes fires; a worker that reconnects every other minute does not; "
  "a standby (inv3) never streams and does not",
  [(f"cachetail_invalidator_streaming{{{INV}}}", "1 1 0x10"),
   (f"cachetail_invalidator_leader{{{INV}}}", "1x12"),
   (f"cachetail_invalidator_streaming{{{INV2}}}", "0 1 0 1 0 1 0 1 0 1 0 1"),
   (f"cachetail_invalidator_leader{{{INV2}}}", "1x12"),
   (f"cachetail_invalidator_streaming{{{INV3}}}", "0x12"),
   (f"cachetail_invalidator_leader{{{INV3}}}", "0x12")],
  [("3m", "CachetailInvalidatorNotStreaming", []),
   ("5m", "CachetailInvalidatorNotStreaming", [a("critical", job=IJ, instance="inv1:9101")])])
T("stalled: inv1's newest event stuck at t=60s and no transactions; inv2 gets heartbeats; "
  "inv3 is stuck on events but still applies transactions",
  [(f"cachetail_invalidator_last_event_timestamp_seconds{{{INV}}}", "0 60 60x10"),
   (f"cachetail_invalidator_transactions_total{{{INV}}}", "5x12"),
   (f"cachetail_invalidator_leader{{{INV}}}", "1x12"),
   (f"cachetail_invalidator_last_event_timestamp_seconds{{{INV2}}}", "0+60x12"),
   (f"cachetail_invalidator_transactions_total{{{INV2}}}", "5x12"),
   (f"cachetail_invalidator_leader{{{INV2}}}", "1x12"),
   (f"cachetail_invalidator_last_event_timestamp_seconds{{{INV3}}}", "0 60 60x10"),
   (f"cachetail_invalidator_transactions_total{{{INV3}}}", "0+10x12"),
   (f"cachetail_invalidator_leader{{{INV3}}}", "1x12")],
  [("3m", "CachetailInvalidatorStalled", []), ("5m", "CachetailInvalidatorStalled", []),
   ("7m", "CachetailInvalidatorStalled", [a("critical", job=IJ, instance="inv1:9101")])])
T("lag: 45 s behind for 5 minutes fires; spikes and 20 s of steady lag do not",
  [(f"cachetail_invalidator_seconds_behind{{{INV}}}", "0 0 45x10"),
   (f"cachetail_invalidator_leader{{{INV}}}", "1x12"),
   (f"cachetail_invalidator_seconds_behind{{{INV2}}}", "45 0 45 0 45 0 45 0 45 0 45 0"),
   (f"cachetail_invalidator_leader{{{INV2}}}", "1x12"),
   (f"cachetail_invalidator_seconds_behind{{{INV3}}}", "20x12"),
   (f"cachetail_invalidator_leader{{{INV3}}}", "1x12")],
  [("6m", "CachetailInvalidatorLagging", []),
   ("8m", "CachetailInvalidatorLagging", [a("warning", job=IJ, instance="inv1:9101")])])
T("not following: inv1 45 s behind the server's binlog end, inv2 failing attempt after attempt while the "
  "lag cannot move (the server unreachable); both fire after a minute",
  [(f"cachetail_invalidator_follow_lag_seconds{{{INV}}}", "0 0 45 105 165 225 285 345 405"),
   (f"cachetail_invalidator_consecutive_failures{{{INV}}}", "0x8"),
   (f"cachetail_invalidator_leader{{{INV}}}", "1x8"),
   (f"cachetail_invalidator_follow_lag_seconds{{{INV2}}}", "0x8"),
   (f"cachetail_invalidator_consecutive_failures{{{INV2}}}", "0 0 6 12 18 24 30 36 42"),
   (f"cachetail_invalidator_leader{{{INV2}}}", "1x8")],
  [("2m", "CachetailInvalidatorNotFollowing", []),
   ("4m", "CachetailInvalidatorNotFollowing", [a("critical", job=IJ, instance="inv1:9101"),
                                               a("critical", job=IJ, instance="inv2:9101")])])
T("not following: inv1 stopped before a binlog event it cannot read and went past it by a full "
  "invalidation within seconds (failures and lag stay low): fires after a minute, clears 10 minutes on; "
  "inv2, a standby whose counter rose while it led: nothing",
  [(f'cachetail_invalidator_unsupported_events_total{{{INV},event_type="TRANSACTION_PAYLOAD_EVENT"}}', "0 0 1x16"),
   (f'cachetail_invalidator_unsupported_events_total{{{INV},event_type="unknown"}}', "0x18"),
   (f"cachetail_invalidator_follow_lag_seconds{{{INV}}}", "0 0 2 0x15"),
   (f"cachetail_invalidator_consecutive_failures{{{INV}}}", "0 0 1 0x15"),
   (f"cachetail_invalidator_leader{{{INV}}}", "1x18"),
   (f'cachetail_invalidator_unsupported_events_total{{{INV2},event_type="PARTIAL_UPDATE_ROWS_EVENT"}}', "0 0 1x16"),
   (f"cachetail_invalidator_leader{{{INV2}}}", "0x18")],
  [("1m", "CachetailInvalidatorNotFollowing", []),
   ("4m", "CachetailInvalidatorNotFollowing", [a("critical", job=IJ, instance="inv1:9101")]),
   ("15m", "CachetailInvalidatorNotFollowing", [])])
T("following: lag spikes (a burst, a failover it follows within seconds), 3 failed attempts, "
  "and a standby with a frozen lag and failures: nothing",
  [(f"cachetail_invalidator_follow_lag_seconds{{{INV}}}", "0 40 0 12 0 35 0 0 0 0"),
   (f"cachetail_invalidator_consecutive_failures{{{INV}}}", "0 3 0 2 0 0 0 0 0 0"),
   (f"cachetail_invalidator_leader{{{INV}}}", "1x10"),
   (f"cachetail_invalidator_follow_lag_seconds{{{INV3}}}", "600x10"),
   (f"cachetail_invalidator_consecutive_failures{{{INV3}}}", "20x10"),
   (f"cachetail_invalidator_leader{{{INV3}}}", "0x10")],
  [("3m", "CachetailInvalidatorNotFollowing", []), ("7m", "CachetailInvalidatorNotFollowing", []),
   ("10m", "CachetailInvalidatorNotFollowing", [])])
T("a leader and a standby: no leader alert; both standbys for 2 minutes: fires after 1",
  [(f"cachetail_invalidator_leader{{{INV}}}", "1 1 1 1 0 0 0 0"),
   (f"cachetail_invalidator_leader{{{INV2}}}", "0x8")],
  [("3m", "CachetailInvalidatorNoLeader", []), ("4m", "CachetailInvalidatorNoLeader", []),
   ("6m", "CachetailInvalidatorNoLeader", [a("critical", job=IJ)])])
T("a standby 40 s behind with an old last event (it left the lead long ago): no lag, stall or streaming alert",
  [(f"cachetail_invalidator_leader{{{INV}}}", "0x12"),
   (f"cachetail_invalidator_streaming{{{INV}}}", "0x12"),
   (f"cachetail_invalidator_seconds_behind{{{INV}}}", "40x12"),
   (f"cachetail_invalidator_last_event_timestamp_seconds{{{INV}}}", "0x12"),
   (f"cachetail_invalidator_transactions_total{{{INV}}}", "5x12"),
   (f"cachetail_invalidator_leader{{{INV2}}}", "1x12")],
  [("10m", "CachetailInvalidatorLagging", []), ("10m", "CachetailInvalidatorStalled", []),
   ("10m", "CachetailInvalidatorNotStreaming", []), ("10m", "CachetailInvalidatorNoLeader", [])])
T("full invalidation: inv1's counter appears at 1 (a fresh worker), inv2's pre-initialised counter goes 0 -> 1; "
  "both fire at once and resolve after 10 minutes",
  [(f'cachetail_invalidator_full_invalidations_total{{{INV},reason="no_position"}}', "_x5 1x15"),
   (f'cachetail_invalidator_full_invalidations_total{{{INV2},reason="purged"}}', "0x5 1x15")],
  [("4m", "CachetailFullInvalidation", []),
   ("6m", "CachetailFullInvalidation", [a("info", job=IJ, instance="inv1:9101", reason="no_position"),
                                        a("info", job=IJ, instance="inv2:9101", reason="purged")]),
   ("14m", "CachetailFullInvalidation", [a("info", job=IJ, instance="inv1:9101", reason="no_position"),
                                         a("info", job=IJ, instance="inv2:9101", reason="purged")]),
   ("16m", "CachetailFullInvalidation", [])])
T("full invalidation long ago (counter steady at 1 for 25 minutes): nothing",
  [(f'cachetail_invalidator_full_invalidations_total{{{INV},reason="purged"}}', "1x25")],
  [("20m", "CachetailFullInvalidation", [])])
T("hit ratio 2/3 (1 hit/s, 0.5 miss/s) for 15 minutes fires after 5 minutes",
  [(f'cachetail_cache_lookups_total{{{API},entity="user",result="hit"}}', "0+60x30"),
   (f'cachetail_cache_lookups_total{{{API},entity="user",result="miss"}}', "0+30x30")],
  [("4m", "CachetailLowHitRate", []), ("10m", "CachetailLowHitRate", [a("warning")])])
T("hit ratio over all entities 92% (users low, products high) with many bypasses: no low-hit alert",
  [(f'cachetail_cache_lookups_total{{{API},entity="user",result="hit"}}', "0+60x30"),
   (f'cachetail_cache_lookups_total{{{API},entity="user",result="miss"}}', "0+30x30"),
   (f'cachetail_cache_lookups_total{{{API},entity="products",result="hit"}}', "0+300x30"),
   (f'cachetail_cache_lookups_total{{{API},entity="user",result="bypass"}}', "0+100x30")],
  [("20m", "CachetailLowHitRate", [])])
T("hit ratio 50% but only 0.1 lookups/s: too quiet to judge",
  [(f'cachetail_cache_lookups_total{{{API},entity="user",result="hit"}}', "0+3x30"),
   (f'cachetail_cache_lookups_total{{{API},entity="user",result="miss"}}', "0+3x30")],
  [("20m", "CachetailLowHitRate", [])])
T("2% of requests answer 503: fires after 5 minutes",
  [(f'cachetail_http_requests_total{{{API},route="/user/{{id}}",method="GET",status="200"}}', "0+600x20"),
   (f'cachetail_http_requests_total{{{API},route="/user/{{id}}",method="GET",status="503"}}', "0+12x20")],
  [("4m", "CachetailApi5xx", []), ("8m", "CachetailApi5xx", [a("critical")])])
T("many 404s and 0.5% of 500s: no 5xx alert (4xx are the client's)",
  [(f'cachetail_http_requests_total{{{API},route="/user/{{id}}",method="GET",status="200"}}', "0+600x20"),
   (f'cachetail_http_requests_total{{{API},route="/user/{{id}}",method="GET",status="404"}}', "0+600x20"),
   (f'cachetail_http_requests_total{{{API},route="/user/{{id}}",method="GET",status="500"}}', "0+6x20")],
  [("10m", "CachetailApi5xx", [])])
T("9% of reads bypass Redis: fires after 3 minutes",
  [(f'cachetail_cache_lookups_total{{{API},entity="user",result="hit"}}', "0+600x20"),
   (f'cachetail_cache_lookups_total{{{API},entity="user",result="bypass"}}', "0+60x20")],
  [("3m", "CachetailRedisBypass", []), ("5m", "CachetailRedisBypass", [a("warning")])])
T("Redis calls failing (0.5/s) with no bypass counted yet: fires",
  [(f'cachetail_cache_lookups_total{{{API},entity="user",result="hit"}}', "0+600x20"),
   (f'cachetail_redis_errors_total{{{API},operation="get"}}', "0+30x20")],
  [("5m", "CachetailRedisBypass", [a("warning")])])
T("0.5% bypasses and a few Redis errors: below both thresholds",
  [(f'cachetail_cache_lookups_total{{{API},entity="user",result="hit"}}', "0+6000x20"),
   (f'cachetail_cache_lookups_total{{{API},entity="user",result="bypass"}}', "0+30x20"),
   (f'cachetail_redis_errors_total{{{API},operation="get"}}', "0+3x20")],
  [("10m", "CachetailRedisBypass", [])])
T("near-cache bypassed on 9 of 10 lookups for 15 minutes: fires after 10",
  [(f'cachetail_nearcache_lookups_total{{{API},result="bypass"}}', "0+540x20"),
   (f'cachetail_nearcache_lookups_total{{{API},result="miss"}}', "0+60x20")],
  [("9m", "CachetailNearcacheNotTracking", []),
   ("16m", "CachetailNearcacheNotTracking", [a("info", job=AJ, instance="api1:5000")])])
T("near-cache tracking (hits and misses, a few bypasses after a restart) or too quiet: nothing",
  [(f'cachetail_nearcache_lookups_total{{{API},result="hit"}}', "0+600x20"),
   (f'cachetail_nearcache_lookups_total{{{API},result="bypass"}}', "0+30x20"),
   ('cachetail_nearcache_lookups_total{job="cachetail-api",instance="api2:5000",result="bypass"}', "0+3x20")],
  [("16m", "CachetailNearcacheNotTracking", [])])
T("6 failing SELECTs a minute: fires after 3 minutes",
  [(f'cachetail_mysql_queries_total{{{API},entity="user",result="ok"}}', "0+600x20"),
   (f'cachetail_mysql_queries_total{{{API},entity="user",result="error"}}', "0+6x20")],
  [("3m", "CachetailMySQLErrors", []), ("5m", "CachetailMySQLErrors", [a("critical")])])
T("one failing SELECT a minute: nothing",
  [(f'cachetail_mysql_queries_total{{{API},entity="user",result="ok"}}', "0+600x20"),
   (f'cachetail_mysql_queries_total{{{API},entity="products",result="error"}}', "0+1x20")],
  [("10m", "CachetailMySQLErrors", [])])

T("an inconsistency found by an invalidation check fires at once and clears after 10 minutes; "
  "inv2's checks are all consistent",
  [(f'cachetail_audit_checks_total{{{INV},kind="invalidation",result="consistent"}}', "0+100x20"),
   (f'cachetail_audit_checks_total{{{INV},kind="invalidation",result="inconsistent"}}', "0 0 0 1x17"),
   (f'cachetail_audit_checks_total{{{INV2},kind="sample",result="consistent"}}', "0+600x20")],
  [("2m", "CachetailCacheInconsistent", []),
   ("4m", "CachetailCacheInconsistent", [a("warning", job=IJ, instance="inv1:9101", kind="invalidation",
                                          result="inconsistent")]),
   ("15m", "CachetailCacheInconsistent", [])])
T("thousands of consistent checks and nothing else: no inconsistency alert",
  [(f'cachetail_audit_checks_total{{{INV},kind="sample",result="consistent"}}', "0+600x30"),
   (f'cachetail_audit_checks_total{{{INV},kind="invalidation",result="consistent"}}', "0+60x30")],
  [("30m", "CachetailCacheInconsistent", [])])
T("every wait for the replica times out, 12 a minute, for 10 minutes: fires; api2's waits succeed",
  [(f'cachetail_replica_waits_total{{{API},result="timeout"}}', "0+12x30"),
   (f'cachetail_replica_waits_total{{{API},result="ok"}}', "0+1x30"),
   ('cachetail_replica_waits_total{job="cachetail-api",instance="api2:5000",result="ok"}', "0+60x30"),
   ('cachetail_replica_waits_total{job="cachetail-api",instance="api2:5000",result="timeout"}', "0+1x30")],
  [("8m", "CachetailReplicaBehind", []),
   ("22m", "CachetailReplicaBehind", [a("warning", job=AJ, instance="api1:5000")])])
T("a rare timeout (one in ten minutes) among few waits: nothing",
  [(f'cachetail_replica_waits_total{{{API},result="timeout"}}', "0 0 0 0 0 1x25"),
   (f'cachetail_replica_waits_total{{{API},result="ok"}}', "0+1x30")],
  [("25m", "CachetailReplicaBehind", [])])
RECORDING = [
    ("the consistency ratio and its nines: 1 inconsistent in 10,100 checks is 4.0 nines",
     {"interval": "1m",
      "input_series": [
          {"series": f'cachetail_audit_checks_total{{{INV},kind="sample",result="consistent"}}', "values": "0+9999x60"},
          {"series": f'cachetail_audit_checks_total{{{INV},kind="sample",result="inconsistent"}}', "values": "0+1x60"},
          {"series": f'cachetail_audit_checks_total{{{INV2},kind="sample",result="consistent"}}', "values": "0+100x60"}],
      "promql_expr_test": [
          {"expr": "cachetail:audit_consistency:nines_1h", "eval_time": "60m",
           "exp_samples": [{"labels": "cachetail:audit_consistency:nines_1h", "value": 4.004321373782642}]},
      ]}),
    ("only consistent checks: the ratio is 1, the nines the cap",
     {"interval": "1m",
      "input_series": [
          {"series": f'cachetail_audit_checks_total{{{INV},kind="sample",result="consistent"}}', "values": "0+100x60"}],
      "promql_expr_test": [
          {"expr": "cachetail:audit_consistency:ratio_1h", "eval_time": "60m",
           "exp_samples": [{"labels": "cachetail:audit_consistency:ratio_1h", "value": 1}]},
          {"expr": "cachetail:audit_consistency:nines_1h", "eval_time": "60m",
           "exp_samples": [{"labels": "cachetail:audit_consistency:nines_1h", "value": 12}]},
      ]}),
]


def render(test_list):
    return {"rule_files": ["alerts.yml"], "evaluation_interval": "1m", "tests": test_list}

# Pass 1: run each test alone, collect the annotations promtool renders.
def run(doc):
    with tempfile.NamedTemporaryFile("w", suffix=".yml", dir=PROMETHEUS, delete=False) as f:
        yaml.safe_dump(doc, f, sort_keys=False, width=200); name = f.name
    try:
        p = subprocess.run(["promtool", "test", "rules", name], capture_output=True, text=True); p.stdout += p.stderr; return p
    finally:
        os.unlink(name)
pair = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
for comment, t in tests:
    for ev in t["alert_rule_test"]:
        for e in ev["exp_alerts"]:
            single = dict(t, alert_rule_test=[{**ev, "exp_alerts": [e]}] if len(ev["exp_alerts"]) == 1 else [ev])
            r = run(render([single]))
            if "got:[" not in r.stdout: sys.exit(f"{comment}:\n{r.stdout}\n{r.stderr}")
            got = r.stdout.split("got:[", 1)[1]
            blocks = re.findall(r"Labels:\{(.*?)\}\n\s*Annotations:\{(.*?)\},?\n", got)
            want = {**e["exp_labels"], "alertname": ev["alertname"]}
            for lb, an in blocks:
                labels = {k: json.loads(f'"{v}"') for k, v in pair.findall(lb)}
                if labels == want:
                    e["exp_annotations"] = {k: json.loads(f'"{v}"') for k, v in pair.findall(an)}
                    break
            else:
                sys.exit(f"{comment}: {ev['eval_time']} {ev['alertname']} {want} not in\n{r.stdout}")
header = """# promtool unit tests of alerts.yml:  promtool test rules deploy/prometheus/alerts_test.yml
# For every alert, series that make it fire (pending first, then firing after
# its `for:`) and series that must not.  The expected annotations are the
# rendered templates, so a broken template or a wrong $value fails here.
# Time starts at 0 and time() follows the evaluation time.
"""
lines = [header, "rule_files:\n  - alerts.yml\nevaluation_interval: 1m\n\ntests:\n"]
for comment, t in tests + RECORDING:
    body = yaml.safe_dump([t], sort_keys=False, width=10000, allow_unicode=True)
    body = "\n".join("  " + line for line in body.splitlines())
    lines.append(f"  # {comment}\n{body}\n\n")
open(OUT, "w").write("".join(lines).rstrip() + "\n")
r = subprocess.run(["promtool", "test", "rules", OUT], capture_output=True, text=True)
print(r.stdout[-3000:], r.stderr[-2000:], r.returncode)
