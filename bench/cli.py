"""benchmark.py's command line: what the cache really does, client side and server side.

Scenarios (``--scenarios``, comma-separated; default all):
  uncached   GET /user/{id}/nocache against warm GET /user/{id} over the same ids
  warming    clear the cache, then a Zipf mix of users + product lists until steady state
  stampede   N concurrent first reads of one id: SELECTs caused and latency
  freshness  UPDATE rows at a set rate while reading them: commit -> seen, stale reads

Against a ``make run`` stack it needs no arguments: the admin token and the MySQL
admin account (for freshness) are read from the environment and ``.env``.  Output:
progress bars, a summary table, and in ``--out`` results.json plus PNG charts.
Exit status: 0 done, 2 the stack could not be used (one line on stderr says why).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import charts, report
from bench.freshness import FreshnessPlan, freshness
from bench.load import ceiling
from bench.scenarios import Plan, cold_to_warm, stampede, uncached_vs_cached
from bench.target import BenchError, DbConfig, Target
from bench.ui import UI

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("uncached", "warming", "stampede", "freshness")
ALIASES = {"1": "uncached", "2": "warming", "3": "stampede", "4": "freshness",
           "cached": "uncached", "cold": "warming", "cold-warm": "warming"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmark.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--api-url", default="http://127.0.0.1:5000")
    p.add_argument("--invalidator-url", default=None,
                   help="the invalidator's metrics endpoint (default http://127.0.0.1:9101, "
                        "or the port INVALIDATOR_METRICS_PORT names)")
    p.add_argument("--admin-token", default=None, help="Bearer token for POST /cache/clear "
                   "(default $ADMIN_TOKEN, from the environment or .env)")
    p.add_argument("--env-file", default=".env", help="dotenv file read beneath the environment")
    p.add_argument("--duration", type=float, default=None,
                   help="seconds per measured phase (default 10; --quick 1.5)")
    p.add_argument("--concurrency", type=int, default=16, help="keep-alive connections (default 16)")
    p.add_argument("--processes", type=int, default=2,
                   help="load-generator processes the connections are spread over (default 2)")
    p.add_argument("--scenarios", default=",".join(SCENARIOS),
                   help=f"comma-separated subset of {', '.join(SCENARIOS)} (default all)")
    p.add_argument("--quick", action="store_true", help="every scenario, whole run under 30 s")
    p.add_argument("--out", default=None, help="output folder (default bench-results/<timestamp>/)")
    p.add_argument("--warm-max", type=float, default=None,
                   help="longest cold -> warm phase in seconds (default 60; --quick 4)")
    p.add_argument("--stampede", type=int, default=200, help="concurrent cold reads (default 200)")
    p.add_argument("--write-rate", type=float, default=20.0, help="freshness UPDATEs per second")
    p.add_argument("--stale-bound", type=float, default=1.0,
                   help="a read this long after a commit that still shows the old value "
                        "counts as stale (default 1 s)")
    p.add_argument("--db-url", default=None,
                   help="mysql://USER:PASSWORD@HOST:PORT/DB with UPDATE rights, for freshness "
                        "(default: DB_HOST, DB_PORT, DB_NAME with DB_ADMIN_USER/DB_ADMIN_PASSWORD)")
    p.add_argument("--db-admin-user", default=None)
    p.add_argument("--db-admin-password", default=None)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    chosen = []
    for name in (s.strip().lower() for s in args.scenarios.split(",") if s.strip()):
        name = ALIASES.get(name, name)
        if name not in SCENARIOS:
            p.error(f"--scenarios: unknown {name!r}; choose from {', '.join(SCENARIOS)}")
        if name not in chosen:
            chosen.append(name)
    args.scenarios = [s for s in SCENARIOS if s in chosen]
    if args.concurrency < 1 or args.processes < 1 or args.stampede < 1:
        p.error("--concurrency, --processes and --stampede must be at least 1")
    return args


def plans(args: argparse.Namespace) -> tuple[Plan, FreshnessPlan, float]:
    quick = args.quick
    duration = args.duration or (1.5 if quick else 10.0)
    warm_max = args.warm_max or (4.0 if quick else 60.0)
    plan = Plan(duration_s=duration, connections=args.concurrency, processes=args.processes,
                ids=200 if quick else 1000, warm_max_s=warm_max,
                warm_min_s=min(warm_max, 3.0 if quick else 10.0), window_s=0.5 if quick else 1.0,
                single_s=0.75 if quick else min(duration, 5.0),
                stampede_n=args.stampede, stampede_rounds=1 if quick else 3, seed=args.seed)
    fresh = FreshnessPlan(duration_s=min(duration, 2.5) if quick else duration,
                          rate_per_s=args.write_rate, readers=min(args.concurrency, 8),
                          bound_s=args.stale_bound, seed=args.seed + 4)
    return plan, fresh, 0.5 if quick else 2.0


def db_config(args: argparse.Namespace, env: dict[str, str]) -> DbConfig:
    if args.db_url:
        return DbConfig.from_url(args.db_url)
    user = args.db_admin_user or env.get("DB_ADMIN_USER")
    if not user:
        raise BenchError("the freshness scenario writes to MySQL: pass --db-url or "
                         "--db-admin-user/--db-admin-password (or set DB_ADMIN_USER in .env), "
                         "or leave it out with --scenarios")
    password = args.db_admin_password if args.db_admin_password is not None else env.get(
        "DB_ADMIN_PASSWORD", "")
    try:
        port = int(env.get("DB_PORT") or 3306)
    except ValueError:
        raise BenchError(f"DB_PORT: expected a port number, got {env.get('DB_PORT')!r}") from None
    return DbConfig(env.get("DB_HOST") or "127.0.0.1", port, user, password,
                    env.get("DB_NAME") or "cachelab")


def preflight(t: Target, args: argparse.Namespace, env: dict[str, str]) -> DbConfig | None:
    t.check_api()
    if "freshness" in args.scenarios:
        t.check_invalidator()
    if {"warming", "stampede"} & set(args.scenarios):
        t.check_token()
    if "freshness" not in args.scenarios:
        return None
    db = db_config(args, env)
    try:
        db.connect().close()
    except Exception as exc:
        raise BenchError(f"cannot connect to MySQL as {db!r}: {exc}") from None
    return db


def run(args: argparse.Namespace, ui: UI) -> dict[str, Any]:
    from cachetail.settings import load_environment

    env = load_environment(args.env_file)
    token = args.admin_token if args.admin_token is not None else env.get("ADMIN_TOKEN")
    inv_url = args.invalidator_url or (
        f"http://127.0.0.1:{env.get('INVALIDATOR_METRICS_PORT') or 9101}")
    t = Target(args.api_url, inv_url, token)
    plan, fresh, ceiling_s = plans(args)
    out = Path(args.out or ROOT / "bench-results" / datetime.now().strftime("%Y%m%d-%H%M%S"))
    started = time.time()
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": {"api_url": t.api_url, "invalidator_url": t.invalidator_url,
                   "scenarios": args.scenarios, "quick": args.quick, "plan": vars(plan),
                   "freshness": vars(fresh)},
        "environment": report.environment(),
        "scenarios": {}, "warnings": [], "charts": {},
    }
    try:
        db = preflight(t, args, env)
        out.mkdir(parents=True, exist_ok=True)
        with ui.phase("load generator ceiling (null server)", ceiling_s):
            c = ceiling(duration_s=ceiling_s, connections=plan.connections, processes=plan.processes)
        results["client_ceiling"] = {"throughput_rps": len(c) / c.wall_s if c.wall_s else None,
                                     "processes": c.processes, "connections": c.connections,
                                     "client_cpu_share": c.client_cpu_share(), "errors": c.errors}
        cdf: dict[str, list[float]] = {}
        sc = results["scenarios"]
        if "uncached" in args.scenarios:
            sc["uncached"], raw1 = uncached_vs_cached(t, plan, ui)
            cdf["nocache (MySQL)"] = raw1["nocache"]
        if "warming" in args.scenarios:
            sc["warming"], raw2 = cold_to_warm(t, plan, ui)
            cdf[f"cold (first {plan.window_s:g} s after clear)"] = raw2["cold_first_window"]
            cdf["misses while warming"] = raw2["misses"]
        if "uncached" in args.scenarios:
            cdf["warm (cached)"] = raw1["cached"]
        if "stampede" in args.scenarios:
            sc["stampede"] = stampede(t, plan, ui)
        lags: list[float] = []
        if "freshness" in args.scenarios and db is not None:
            sc["freshness"], lags = freshness(t, db, fresh, ui)
        results["warnings"] = warnings(results)
        results["elapsed_s"] = time.time() - started
        results["charts"] = draw(out, cdf, sc, lags, plan.connections)
        report.write_json(results, out / "results.json")
    finally:
        t.close()
    report.summary(results, ui)
    ui.log(f"wrote {out / 'results.json'} and {len(results['charts'])} charts "
           f"in {results['elapsed_s']:.1f} s")
    return results


def draw(out: Path, cdf: dict[str, list[float]], sc: dict[str, Any], lags: list[float],
         connections: int) -> dict[str, str]:
    made: dict[str, str] = {}
    title = f"GET /user/{{id}}: client latency CDF, {connections} connections"
    for name, path in (("latency_cdf", charts.latency_cdf(cdf, out / "latency_cdf.png", title)),
                       ("warming", charts.warming(sc["warming"], out / "warming.png")
                        if "warming" in sc else None),
                       ("freshness", charts.freshness(lags, sc["freshness"], out / "freshness.png")
                        if "freshness" in sc else None)):
        if path is not None:
            made[name] = path.name
    return made


def warnings(results: dict[str, Any]) -> list[str]:
    """Where a figure should not be trusted: the client near its ceiling, errors, bypasses."""
    out = []
    ceiling_rps = (results.get("client_ceiling") or {}).get("throughput_rps") or 0
    un = results["scenarios"].get("uncached")
    if un:
        for name in ("nocache", "cached"):
            cl = un[name]["client"]
            if ceiling_rps and cl["throughput_rps"] and cl["throughput_rps"] > 0.5 * ceiling_rps:
                out.append(f"{name}: {cl['throughput_rps']:.0f} req/s is over half the load "
                           f"generator's ceiling ({ceiling_rps:.0f} req/s): the client may be measured")
            if cl["errors"] or set(cl["status"]) - {"200"}:
                out.append(f"{name}: statuses {cl['status']}, {cl['errors']} connection errors")
        if un["cached"]["client"]["x_cache"].get("hit", 0) < 0.99 * un["cached"]["client"]["count"]:
            out.append(f"cached phase was not all hits: {un['cached']['client']['x_cache']}")
    for name, r in results["scenarios"].items():
        server = r.get("server") if isinstance(r, dict) else None
        if server and server.get("lookups", {}).get("bypass"):
            out.append(f"{name}: {server['lookups']['bypass']} reads bypassed Redis")
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ui = UI()
    try:
        run(args, ui)
    except BenchError as exc:
        print(f"benchmark.py: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("benchmark.py: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
