"""``python -m api`` / ``cachetail-api``: check the configuration, then run uvicorn.

With more than one worker, metrics are collected in multiprocess mode, so
/metrics sums every worker; one worker keeps them in memory, which costs about
a tenth of what the mmap'd files cost per request.  PROMETHEUS_MULTIPROC_DIR
must be set before prometheus_client is first imported, which is why nothing
above ``main`` imports it (or api.app).
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from api.settings import ApiSettings, SettingsError
from cachetail.settings import load_environment


def _arguments(argv: Sequence[str] | None, settings: ApiSettings) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cachetail-api", description=__doc__)
    parser.add_argument("--host", default=settings.host, help="listen address (API_HOST)")
    parser.add_argument("--port", type=int, default=settings.port, help="port (API_PORT)")
    parser.add_argument("--workers", type=int, default=settings.workers,
                        help="worker processes (API_WORKERS)")
    parser.add_argument("--log-level", default="info",
                        choices=("critical", "error", "warning", "info", "debug"))
    parser.add_argument("--no-access-log", action="store_true")
    args = parser.parse_args(argv)
    if not 1 <= args.workers <= 64:
        parser.error("--workers: expected 1 to 64")
    if not 1 <= args.port <= 65535:
        parser.error("--port: expected 1 to 65535")
    return args


def _prepare_multiproc_dir(workers: int) -> tuple[Path | None, bool]:
    """A clean metrics directory: the given one emptied of *.db files, or a fresh temp one
    when several workers must share their figures (none for a single worker)."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip()
    if not given and workers == 1:
        return None, False
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):  # values of a previous run must not be summed in
            stale.unlink()
        return path, False
    path = Path(tempfile.mkdtemp(prefix="cachetail-api-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    return path, True


def _log_config() -> dict[str, object]:
    """uvicorn's logging, with the API's own logger printed the same way."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["api"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = ApiSettings.from_env(load_environment())
    except SettingsError as exc:
        print(f"cachetail-api: configuration error: {exc}", file=sys.stderr)
        return 2
    args = _arguments(argv, settings)
    path, created = _prepare_multiproc_dir(args.workers)
    import uvicorn  # after the metrics directory is set; uvicorn does not import prometheus

    try:
        uvicorn.run("api.app:app", host=args.host, port=args.port, workers=args.workers,
                    log_config=_log_config(), log_level=args.log_level,
                    access_log=not args.no_access_log,
                    proxy_headers=False, server_header=False)
    finally:
        if created and path is not None:
            shutil.rmtree(path, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
