"""``python -m invalidator`` / ``invalidator``: run the worker, or ``--check`` its health.

Exit codes: 0 after SIGTERM/SIGINT (or a healthy ``--check``), 1 for an unhealthy
``--check``, 2 for a configuration or start-up check error (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import urllib.error
import urllib.request

from cachetail import config as declaration
from cachetail.settings import Reader, SettingsError, load_environment

from invalidator.checks import CheckFailed
from invalidator.settings import InvalidatorSettings

log = logging.getLogger("invalidator")


def check(env: dict[str, str]) -> int:
    """0 when the running worker answers /health with 200 (streaming, Redis up, events recent)."""
    r = Reader(env)
    try:
        host = r.str("INVALIDATOR_METRICS_HOST", "127.0.0.1")
        port = r.int("INVALIDATOR_METRICS_PORT", 9101, lo=1, hi=65535)
    except SettingsError as exc:
        print(f"invalidator: configuration error: {exc}", file=sys.stderr)
        return 1
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{host}:{port}/health"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            body = response.read().decode()
            print(body)
            return 0 if response.status == 200 else 1
    except urllib.error.HTTPError as exc:
        print(exc.read().decode(errors="replace") or f"unhealthy: HTTP {exc.code}")
    except (urllib.error.URLError, OSError) as exc:
        print(json.dumps({"healthy": False, "error": f"no worker answers on {url}: {exc}"}))
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="invalidator", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 0 if the running worker is healthy")
    parser.add_argument("--env-file", default=".env", help="dotenv file beneath the environment (default .env)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s invalidator %(levelname)s %(message)s")
    env = load_environment(args.env_file)
    if args.check:
        return check(env)
    try:
        settings = InvalidatorSettings.from_env(env)
        declaration.load(settings.config_path)  # read and checked before any connection
    except SettingsError as exc:
        print(f"invalidator: configuration error: {exc}", file=sys.stderr)
        return 2
    except declaration.ConfigError as exc:
        for line in exc.errors:
            print(f"invalidator: {exc.source}: {line}", file=sys.stderr)
        return 2

    from invalidator.worker import Worker  # the heavy imports only when running

    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("%s received; stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        return Worker(settings, stop).run()
    except CheckFailed as exc:
        for line in str(exc).splitlines():
            print(f"invalidator: start-up check failed: {line}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.filename is None and "address" in str(exc).lower():
            print(f"invalidator: cannot serve metrics on {settings.metrics_host}:{settings.metrics_port}:"
                  f" {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
