"""Generates deploy/grafana/cachetail.json: edit here, run it, commit both."""
import json
DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
RI = "$__rate_interval"
panels = []
_id = [0]
def nid():
    _id[0] += 1; return _id[0]
def row(title, y):
    panels.append({"type": "row", "id": nid(), "title": title, "collapsed": False,
                   "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
def ts(title, desc, targets, x, y, w=12, h=8, unit="short", extra=None, stack=False, bars=False, minv=None, maxv=None, thresholds=None):
    defaults = {"unit": unit, "custom": {"drawStyle": "bars" if bars else "line", "lineWidth": 1,
                                          "fillOpacity": 60 if bars else 10, "showPoints": "never",
                                          "spanNulls": False,
                                          "stacking": {"mode": "normal" if stack else "none", "group": "A"}}}
    if minv is not None: defaults["min"] = minv
    if maxv is not None: defaults["max"] = maxv
    if thresholds:
        defaults["thresholds"] = {"mode": "absolute", "steps": thresholds}
        defaults["custom"]["thresholdsStyle"] = {"mode": "line"}
    p = {"type": "timeseries", "id": nid(), "title": title, "description": desc, "datasource": DS,
         "gridPos": {"h": h, "w": w, "x": x, "y": y},
         "fieldConfig": {"defaults": defaults, "overrides": []},
         "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["mean", "max", "lastNotNull"]},
                     "tooltip": {"mode": "multi", "sort": "desc"}},
         "targets": [{"datasource": DS, "refId": chr(65 + i), "expr": e, "legendFormat": legend, "range": True}
                     for i, (e, legend) in enumerate(targets)]}
    panels.append(p); return p
def stat(title, desc, expr, x, y, w=4, h=4, unit="short", steps=None, mappings=None, legend=""):
    p = {"type": "stat", "id": nid(), "title": title, "description": desc, "datasource": DS,
         "gridPos": {"h": h, "w": w, "x": x, "y": y},
         "fieldConfig": {"defaults": {"unit": unit, "mappings": mappings or [],
                                      "thresholds": {"mode": "absolute", "steps": steps or [{"color": "green", "value": None}]}},
                         "overrides": []},
         "options": {"colorMode": "background", "graphMode": "area", "justifyMode": "auto", "textMode": "auto",
                     "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
         "targets": [{"datasource": DS, "refId": "A", "expr": expr, "legendFormat": legend, "instant": True}]}
    panels.append(p); return p

HIT = 'sum by (entity) (rate(cachetail_cache_lookups_total{result="hit"}[%s]))'
HM = 'sum by (entity) (rate(cachetail_cache_lookups_total{result=~"hit|miss"}[%s]))'

y = 0
row("Overview", y); y += 1
stat("Hit ratio (15 min)", "Hits / (hits + misses) over the last 15 minutes, all entities. The lab's target is 80% (alert CachetailLowHitRate).",
     'sum(increase(cachetail_cache_lookups_total{result="hit"}[15m])) / sum(increase(cachetail_cache_lookups_total{result=~"hit|miss"}[15m]))',
     0, y, unit="percentunit", steps=[{"color": "red", "value": None}, {"color": "orange", "value": 0.8}, {"color": "green", "value": 0.9}])
stat("Requests/s", "HTTP requests per second, all routes, every API host.",
     f'sum(rate(cachetail_http_requests_total[{RI}]))', 4, y, unit="reqps")
stat("5xx ratio", "Share of requests answered 5xx (alert CachetailApi5xx above 1%).",
     f'sum(rate(cachetail_http_requests_total{{status=~"5.."}}[{RI}])) / sum(rate(cachetail_http_requests_total[{RI}]))',
     8, y, unit="percentunit", steps=[{"color": "green", "value": None}, {"color": "red", "value": 0.01}])
stat("Redis bypasses/s", "Reads answered from MySQL because Redis failed or timed out (X-Cache: BYPASS).",
     f'sum(rate(cachetail_cache_lookups_total{{result="bypass"}}[{RI}])) or vector(0)', 12, y, unit="reqps",
     steps=[{"color": "green", "value": None}, {"color": "red", "value": 0.01}])
stat("Leader following", "1 when the invalidator holding the leader lease is up and following the binlog; 0 when no invalidator leads or the leader is not connected (alerts CachetailInvalidatorNoLeader, CachetailInvalidatorNotStreaming). Standbys do not count.",
     'sum(up{job="cachetail-invalidator"} * on (job, instance) cachetail_invalidator_leader * on (job, instance) cachetail_invalidator_streaming) or vector(0)', 16, y,
     steps=[{"color": "red", "value": None}, {"color": "green", "value": 1}],
     mappings=[{"type": "value", "options": {"0": {"text": "NO", "index": 0}, "1": {"text": "yes", "index": 1}}}])
stat("Invalidator lag", "Seconds between the newest applied binlog event and now (alert CachetailInvalidatorLagging above 30 s).",
     'max(cachetail_invalidator_seconds_behind)', 20, y, unit="s",
     steps=[{"color": "green", "value": None}, {"color": "orange", "value": 5}, {"color": "red", "value": 30}])
y += 4

row("Read API", y); y += 1
ts("Cache lookups per second by entity and result", "Cached reads (GET /user/{id}, GET /products) per second: hit, miss, bypass. The sum over results is the cached read rate of that entity.",
   [(f'sum by (entity, result) (rate(cachetail_cache_lookups_total[{RI}]))', "{{entity}} {{result}}")], 0, y, unit="reqps", stack=True)
ts("Hit ratio by entity", "Hits / (hits + misses) per entity. The dashed line is the 80% target.",
   [(f'({HIT % RI}) / ({HM % RI})', "{{entity}}")], 12, y, unit="percentunit", minv=0, maxv=1,
   thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 0.8}])
y += 8
ts("Cached read latency by result (p50, p99)", "Time to answer a cached read, from the first Redis call to the body: hits are Redis round trips (sub-millisecond on loopback, ~1 ms in a VPC); misses add a SELECT and the compare-and-set store; bypasses are MySQL reads after a Redis failure.",
   [(f'histogram_quantile(0.5, sum by (le, result) (rate(cachetail_cache_lookup_duration_seconds_bucket[{RI}])))', "p50 {{result}}"),
    (f'histogram_quantile(0.99, sum by (le, result) (rate(cachetail_cache_lookup_duration_seconds_bucket[{RI}])))', "p99 {{result}}")],
   0, y, unit="s")
ts("HTTP latency by route (p50, p99)", "Whole-request latency per route template; /user/{id}/nocache is the uncached baseline to compare hits against.",
   [(f'histogram_quantile(0.5, sum by (le, route) (rate(cachetail_http_request_duration_seconds_bucket[{RI}])))', "p50 {{route}}"),
    (f'histogram_quantile(0.99, sum by (le, route) (rate(cachetail_http_request_duration_seconds_bucket[{RI}])))', "p99 {{route}}")],
   12, y, unit="s")
y += 8
ts("HTTP requests per second by status", "Answers by status code; 4xx are bad input (never 5xx), 503 means MySQL was unreachable on a miss.",
   [(f'sum by (status) (rate(cachetail_http_requests_total[{RI}]))', "{{status}}")], 0, y, unit="reqps", stack=True)
ts("SELECTs per second", "Queries the API sent to MySQL, by entity and result (ok, error), and the p99 of one SELECT including the wait for a pooled connection (right axis). A warm cache keeps this far below the request rate.",
   [(f'sum by (entity, result) (rate(cachetail_mysql_queries_total[{RI}]))', "{{entity}} {{result}}"),
    (f'histogram_quantile(0.99, sum by (le, entity) (rate(cachetail_mysql_query_duration_seconds_bucket[{RI}])))', "p99 {{entity}}")],
   12, y, unit="qps")
panels[-1]["fieldConfig"]["overrides"] = [{"matcher": {"id": "byRegexp", "options": "^p99 .*"},
                                          "properties": [{"id": "unit", "value": "s"}, {"id": "custom.axisPlacement", "value": "right"}]}]
y += 8
ts("Redis bypasses and errors", "Reads answered from MySQL because Redis failed or timed out, by entity, and failed Redis calls by operation. Anything but zero: check Redis (alert CachetailRedisBypass).",
   [(f'sum by (entity) (rate(cachetail_cache_lookups_total{{result="bypass"}}[{RI}]))', "bypass {{entity}}"),
    (f'sum by (operation) (rate(cachetail_redis_errors_total[{RI}]))', "error {{operation}}")], 0, y, unit="reqps")
ts("Cache fills", "What happened to misses: stored (the fill won its compare-and-set), stale_prevented (an invalidation arrived during the fill, so the possibly old row was not stored), waited (another fill's value arrived), uncached (answered without storing).",
   [(f'sum by (result) (rate(cachetail_cache_fills_total[{RI}]))', "{{result}}")], 12, y, unit="ops", stack=True)
y += 8

row("Near-cache", y); y += 1
ts("Near-cache lookups per second", "User reads per result in the workers' near-caches: hit (answered from process memory), miss (read from Redis, then kept), bypass (the near-cache is on but not tracking: every read goes to Redis; alert CachetailNearcacheNotTracking).",
   [(f'sum by (result) (rate(cachetail_nearcache_lookups_total[{RI}]))', "{{result}}")], 0, y, unit="reqps", stack=True)
ts("Near-cache size, tracking and drops", "Entries held (left axis) and workers tracking, per host; evictions by reason and resets by reason (flush, disconnected, heartbeat) per interval. A reset empties a near-cache at once: the next reads miss.",
   [('sum by (instance) (cachetail_nearcache_entries)', "entries {{instance}}"),
    ('sum by (instance) (cachetail_nearcache_tracking)', "tracking workers {{instance}}"),
    (f'sum by (reason) (increase(cachetail_nearcache_evictions_total[{RI}]))', "evicted {{reason}}"),
    (f'sum by (reason) (increase(cachetail_nearcache_resets_total[{RI}]))', "reset {{reason}}")], 12, y, unit="short")
panels[-1]["fieldConfig"]["overrides"] = [{"matcher": {"id": "byRegexp", "options": "^(tracking|evicted|reset) .*"},
                                          "properties": [{"id": "custom.axisPlacement", "value": "right"}]}]
y += 8

row("Invalidator", y); y += 1
ts("Invalidator lag", "seconds_behind: age of the newest applied event (0 when caught up and quiet). Since last event: time since anything, heartbeats included, came from the server; it stays under a few seconds while the stream is alive.",
   [('cachetail_invalidator_seconds_behind', "behind {{instance}}"),
    ('time() - cachetail_invalidator_last_event_timestamp_seconds', "since last event {{instance}}")],
   0, y, unit="s", thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 30}])
ts("Commit -> applied (p50, p90, p99)", "Per transaction: from its commit timestamp in the binlog to Redis acknowledging its deletes/refreshes. Binlog timestamps have 1-second resolution, so read this as an upper bound.",
   [(f'histogram_quantile({q}, sum by (le) (rate(cachetail_invalidator_commit_to_applied_seconds_bucket[{RI}])))', f"p{int(q * 100)}")
    for q in (0.5, 0.9, 0.99)], 12, y, unit="s")
y += 8
ts("Row events per second", "Binlog row events by table and operation; table=other are events of tables cachetail does not map, dropped before their rows are decoded. Transactions/s applied on the right.",
   [(f'sum by (table, operation) (rate(cachetail_invalidator_row_events_total[{RI}]))', "{{table}} {{operation}}"),
    (f'sum(rate(cachetail_invalidator_transactions_total[{RI}]))', "transactions")], 0, y, unit="ops")
panels[-1]["fieldConfig"]["overrides"] = [{"matcher": {"id": "byName", "options": "transactions"},
                                          "properties": [{"id": "custom.axisPlacement", "value": "right"}]}]
ts("Keys per second", "Redis keys acted on: deleted, refreshed (refresh mode), generation_bumped (every products list variant at once), cleared (full invalidation).",
   [(f'sum by (action) (rate(cachetail_invalidator_keys_total[{RI}]))', "{{action}}")], 12, y, unit="ops", stack=True)
y += 8
ts("Reconnects and full invalidations", "Reconnects after a lost connection by target (mysql, redis), and full invalidations by reason (no_position, purged, diverged, ...), per interval. A full invalidation is followed by a burst of misses.",
   [(f'sum by (target) (increase(cachetail_invalidator_reconnects_total[{RI}]))', "reconnect {{target}}"),
    (f'sum by (reason) (increase(cachetail_invalidator_full_invalidations_total[{RI}]))', "full invalidation {{reason}}")],
   0, y, unit="short", bars=True)
ts("Binlog position", "File index and byte offset of the last applied transaction: should move whenever the database takes writes.",
   [('cachetail_invalidator_binlog_file_index', "file index {{instance}}"),
    ('cachetail_invalidator_binlog_position', "offset {{instance}}")], 12, y, unit="none")
panels[-1]["fieldConfig"]["overrides"] = [{"matcher": {"id": "byRegexp", "options": "^offset .*"},
                                          "properties": [{"id": "unit", "value": "decbytes"}, {"id": "custom.axisPlacement", "value": "right"}]}]
y += 8
ts("Leadership", "Which invalidator holds the leader lease (1) and which stand by (0), one line per host. Exactly one should be 1; a change of line is a takeover.",
   [('cachetail_invalidator_leader', "leader {{instance}}")], 0, y, unit="none", minv=0, maxv=1)
ts("Takeovers, lost leases and failover replays", "Per interval: leases acquired (a start or a takeover), leases lost while leading (expired, taken, fenced off), and binlog windows replayed after a Redis Cluster failover.",
   [(f'sum by (instance) (increase(cachetail_invalidator_takeovers_total[{RI}]))', "takeover {{instance}}"),
    (f'sum by (instance) (increase(cachetail_invalidator_leadership_lost_total[{RI}]))', "lost {{instance}}"),
    (f'sum by (reason) (increase(cachetail_invalidator_replays_total[{RI}]))', "replay {{reason}}")],
   12, y, unit="short", bars=True)
y += 8
ts("Following the database", "follow_lag_seconds: time since the leader last had applied everything the MySQL server's own binlog held (asked once a second; 0 while it keeps up). Consecutive failures: attempts to follow that failed since the last real progress (right axis). Both rise during a database failover and must fall within seconds.",
   [('max by (instance) (cachetail_invalidator_follow_lag_seconds and on (job, instance) cachetail_invalidator_leader == 1)', "lag {{instance}}"),
    ('max by (instance) (cachetail_invalidator_consecutive_failures)', "failures {{instance}}")],
   0, y, unit="s", thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 30}])
panels[-1]["fieldConfig"]["overrides"] = [{"matcher": {"id": "byRegexp", "options": "^failures .*"},
                                          "properties": [{"id": "unit", "value": "short"}, {"id": "custom.axisPlacement", "value": "right"}]}]
ts("Binlog errors, resumes and the server followed", "Per interval: failed connects and broken streams by kind, streams opened by how their start was named (position on its own server, gtid on another), database failovers followed (source changes), and binlog events it could not read and stopped before (unreadable: a server setting such as binlog_transaction_compression). The server_id followed is on the right axis.",
   [(f'sum by (kind) (increase(cachetail_invalidator_stream_errors_total[{RI}]))', "error {{kind}}"),
    (f'sum by (how) (increase(cachetail_invalidator_resumes_total[{RI}]))', "resume by {{how}}"),
    (f'sum(increase(cachetail_invalidator_source_changes_total[{RI}]))', "source changes"),
    (f'sum by (event_type) (increase(cachetail_invalidator_unsupported_events_total[{RI}]))', "unreadable {{event_type}}"),
    ('max by (instance) (cachetail_invalidator_source_server_id and on (job, instance) cachetail_invalidator_leader == 1)', "server_id {{instance}}")],
   12, y, unit="short", bars=True)
panels[-1]["fieldConfig"]["overrides"] = [{"matcher": {"id": "byRegexp", "options": "^server_id .*"},
                                          "properties": [{"id": "custom.drawStyle", "value": "line"}, {"id": "custom.axisPlacement", "value": "right"}]}]

y += 8
row("Freshness by GTID (read replicas, Cachetail-Min-GTID)", y); y += 1
ts("Replica waits and reads sent to the primary", "Fills from the read replica (DB_READ_HOST) that had to wait for it to apply their watermark, by result (ok; timeout: DB_READ_WAIT_MS passed, alert CachetailReplicaBehind), and reads sent to the primary by reason (timeout, lag: DB_READ_MAX_LAG_MS, unmarked: no watermark yet, min_gtid, contended, replica_error, unprobed). Reads to the primary are correct, but load it.",
   [(f'sum by (result) (rate(cachetail_replica_waits_total[{RI}]))', "wait {{result}}"),
    (f'sum by (reason) (rate(cachetail_primary_reads_total[{RI}]))', "primary {{reason}}")], 0, y, unit="ops")
ts("Time waited for a GTID (p50, p99)", "replica: the wait and the SELECT on the replica, for fills that had to wait; min_gtid: reads carrying Cachetail-Min-GTID, until the invalidator applied it (API_MIN_GTID_WAIT_MS). Reads of one's own write that waited, by result, on the right axis.",
   [(f'histogram_quantile(0.5, sum by (le, kind) (rate(cachetail_freshness_wait_seconds_bucket[{RI}])))', "p50 {{kind}}"),
    (f'histogram_quantile(0.99, sum by (le, kind) (rate(cachetail_freshness_wait_seconds_bucket[{RI}])))', "p99 {{kind}}"),
    (f'sum by (result) (rate(cachetail_min_gtid_waits_total[{RI}]))', "min-GTID waits {{result}}")],
   12, y, unit="s")
panels[-1]["fieldConfig"]["overrides"] = [{"matcher": {"id": "byRegexp", "options": "^min-GTID .*"},
                                          "properties": [{"id": "unit", "value": "ops"}, {"id": "custom.axisPlacement", "value": "right"}]}]

y += 8
row("Consistency (the auditor)", y); y += 1
ts("Consistency, in nines", "cachetail:audit_consistency:nines_1h: of the audit checks of the last hour, the share that found the cache holding what MySQL holds, as nines (0.999 -> 3; 12 when none was inconsistent). Below 12 means a confirmed inconsistency: see the next panel and the invalidator's log.",
   [('cachetail:audit_consistency:nines_1h', "nines")], 0, y, unit="none", minv=0)
ts("Audit checks and repairs", "Per interval: checks by kind (invalidation: a key of an applied transaction checked again AUDIT_DELAY_S later; sample: the SCAN sweep) and result, keys the auditor deleted, and checks skipped by reason.",
   [(f'sum by (kind, result) (increase(cachetail_audit_checks_total[{RI}]))', "{{kind}} {{result}}"),
    (f'sum(increase(cachetail_audit_repairs_total[{RI}]))', "repairs"),
    (f'sum by (reason) (increase(cachetail_audit_skipped_total[{RI}]))', "skipped {{reason}}")],
   12, y, unit="short", bars=True)

dash = {
    "__requires": [{"type": "grafana", "id": "grafana", "name": "Grafana", "version": "9.0.0"},
                   {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
                   {"type": "panel", "id": "timeseries", "name": "Time series", "version": ""},
                   {"type": "panel", "id": "stat", "name": "Stat", "version": ""}],
    "annotations": {"list": [
        {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
         "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"},
        {"datasource": DS, "enable": True, "iconColor": "red", "name": "Full invalidations",
         "expr": "changes(cachetail_invalidator_full_invalidations_total[2m]) > 0", "step": "1m",
         "titleFormat": "Full invalidation ({{reason}})", "textFormat": "{{instance}}", "useValueForTime": False}]},
    "description": "cachetail: cache-aside read API (hit ratio, latency, MySQL load, Redis bypasses) and the binlog invalidator (lag, commit -> applied, throughput, reconnects).",
    "editable": True, "graphTooltip": 1, "links": [], "liveNow": False,
    "panels": panels,
    "refresh": "30s", "schemaVersion": 39, "tags": ["cachetail", "redis", "mysql"],
    "templating": {"list": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource", "query": "prometheus",
                             "current": {}, "hide": 0, "includeAll": False, "multi": False, "options": [],
                             "refresh": 1, "regex": "", "skipUrlSync": False}]},
    "time": {"from": "now-1h", "to": "now"}, "timepicker": {}, "timezone": "",
    "title": "cachetail", "uid": "cachetail", "version": 1, "weekStart": ""}
open(__import__("pathlib").Path(__file__).resolve().parents[1] / "grafana" / "cachetail.json", "w").write(json.dumps(dash, indent=2) + "\n")
print(len(panels), "panels")
