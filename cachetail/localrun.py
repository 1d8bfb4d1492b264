"""``make run``: the whole stack on this machine, in the foreground.

Starts MariaDB (binlog on) and Redis under ``.state/`` on ports of their own,
loads ``sql/init_db.sql`` once, writes a ``.env`` when there is none, then runs
the invalidator and the API on http://127.0.0.1:5000.  Ctrl-C stops all of it.
A ``.env`` that points at remote hosts (RDS, ElastiCache) is honoured: then
only the two cachetail processes start.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from cachetail.devstack import (
    ROOT, DevStackError, MariaDB, RedisServer, load_schema, port_in_use, stop_stale,
)
from cachetail.settings import load_environment

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
DEFAULT_DB_PORT = 13306
DEFAULT_REDIS_PORT = 16379


def write_env(path: Path) -> None:
    """A .env for the local stack, with fresh random secrets, readable by its owner only."""
    text = f"""\
# Written by `make run` for the local stack; edit it to point at RDS / ElastiCache
# (see .env.example for every variable).
DB_HOST=127.0.0.1
DB_PORT={DEFAULT_DB_PORT}
DB_NAME=cachelab
DB_USER=cachetail_api
DB_PASSWORD={secrets.token_urlsafe(18)}
REDIS_HOST=127.0.0.1
REDIS_PORT={DEFAULT_REDIS_PORT}
ADMIN_TOKEN={secrets.token_urlsafe(24)}
# The invalidator's own least-privilege account (replication + SELECT).
INVALIDATOR_DB_USER=cachetail_invalidator
INVALIDATOR_DB_PASSWORD={secrets.token_urlsafe(18)}
INVALIDATOR_SERVER_ID=4242
INVALIDATOR_METRICS_PORT=9101
INVALIDATOR_MODE=delete
# The local root account, used only by benchmark.py's freshness scenario to write.
DB_ADMIN_USER=root
DB_ADMIN_PASSWORD=
"""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _claim_port(state: Path, name: str, variable: str, port: int) -> None:
    """Stop what an earlier crashed run left there; fail clearly if anything else holds it."""
    if stop_stale(state / name.lower() / f"{name.lower()}.pid"):
        print(f"stopped the {name} an earlier make run left running", flush=True)
    if port_in_use(port):
        raise DevStackError(f"port {port} ({variable}) is already in use; "
                            f"stop what holds it or change {variable} in .env")


def start_servers(env: dict[str, str], state: Path) -> list[MariaDB | RedisServer]:
    started: list[MariaDB | RedisServer] = []
    if env.get("DB_HOST", "127.0.0.1") in LOCAL_HOSTS:
        port = int(env.get("DB_PORT", DEFAULT_DB_PORT))
        _claim_port(state, "MariaDB", "DB_PORT", port)
        db = MariaDB(state / "mariadb", port=port, server_id=1)
        print(f"starting MariaDB on 127.0.0.1:{port} (data in {db.datadir})", flush=True)
        db.start()
        started.append(db)
        marker = state / "mariadb" / "schema-loaded"
        if not marker.exists():
            print("loading sql/init_db.sql and sql/grants.sql", flush=True)
            load_schema(db, env.get("DB_PASSWORD", ""), env.get("INVALIDATOR_DB_PASSWORD", ""))
            marker.touch()
    if env.get("REDIS_HOST", "127.0.0.1") in LOCAL_HOSTS:
        port = int(env.get("REDIS_PORT", DEFAULT_REDIS_PORT))
        _claim_port(state, "Redis", "REDIS_PORT", port)
        cache = RedisServer(state / "redis", port=port, password=env.get("REDIS_PASSWORD") or None)
        print(f"starting Redis on 127.0.0.1:{port}", flush=True)
        cache.start()
        started.append(cache)
    return started


def invalidator_env(env: dict[str, str], state: Path) -> dict[str, str]:
    child = dict(os.environ)
    if env.get("INVALIDATOR_DB_USER"):
        child["DB_USER"] = env["INVALIDATOR_DB_USER"]
        child["DB_PASSWORD"] = env.get("INVALIDATOR_DB_PASSWORD", "")
    child.setdefault("INVALIDATOR_STATE_DIR", str(state / "invalidator"))
    return child


def drop_moved_ttls(path: Path) -> None:
    """A .env an earlier `make run` wrote holds CACHE_TTL_* lines: the TTLs live in
    cachetail.toml now, and the settings refuse those variables.  Take them out."""
    text = path.read_text()
    if not text.startswith("# Written by `make run`"):
        return
    kept = [line for line in text.splitlines(keepends=True)
            if not line.startswith(("CACHE_TTL_USER_S=", "CACHE_TTL_PRODUCTS_S=", "CACHE_TTL_NEGATIVE_S="))]
    if len("".join(kept)) != len(text):
        path.write_text("".join(kept))
        print("removed CACHE_TTL_* from .env: TTLs are declared in cachetail.toml now", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make run", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=5000, help="API port (default 5000)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers (default 1)")
    args = parser.parse_args(argv)

    os.chdir(ROOT)
    # SIGTERM (kill, a closed terminal's supervisor) stops everything as Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    env_path = ROOT / ".env"
    if not env_path.exists():
        write_env(env_path)
        print("wrote .env for the local stack (secrets generated, mode 0600)", flush=True)
    else:
        drop_moved_ttls(env_path)
    env = load_environment(env_path)
    state = ROOT / ".state"
    state.mkdir(exist_ok=True)

    servers: list[MariaDB | RedisServer] = []
    children: list[subprocess.Popen[bytes]] = []
    try:
        servers = start_servers(env, state)
        py = sys.executable
        names = ["invalidator", "api"]
        children.append(subprocess.Popen([py, "-m", "invalidator"], env=invalidator_env(env, state)))
        children.append(subprocess.Popen(
            [py, "-m", "api", "--host", "127.0.0.1", "--port", str(args.port),
             "--workers", str(args.workers)]))
        print(f"cachetail is up: http://127.0.0.1:{args.port}/docs  (Ctrl-C stops everything)", flush=True)
        while all(c.poll() is None for c in children):
            time.sleep(0.5)
        name, failed = next((n, c) for n, c in zip(names, children, strict=True) if c.poll() is not None)
        print(f"make run: the {name} exited with {failed.returncode}; stopping", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping", flush=True)
        return 0
    except DevStackError as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 1
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
        for server in reversed(servers):
            server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
