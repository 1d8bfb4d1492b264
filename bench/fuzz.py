"""The OpenAPI fuzz at length: schemathesis, every check, many examples, both declarations.

``tests/test_openapi_fuzz.py`` runs the same with 25 examples per operation in ``make test``;
this runs ``--examples`` (default 500) on throwaway servers started here: the lab
(cachetail.toml) and the shop (examples/shop.toml).  It prints, per declaration, the
operations, the test cases generated, the failures and the time.

    .venv/bin/python -m bench.fuzz                 # ~10 minutes
    .venv/bin/python -m bench.fuzz --examples 100
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from support.api import api_process  # noqa: E402 - tests/ on the path first (above)
from cachetail.devstack import MariaDB, RedisServer, load_example, load_schema  # noqa: E402 - after the path set-up


def run(url: str, examples: int, work: Path) -> tuple[int, str, float]:
    started = time.monotonic()
    done = subprocess.run(
        [str(Path(sys.executable).parent / "st"), "run", f"{url}/openapi.json", "--checks", "all",
         "--mode", "all", "--max-examples", str(examples), "--continue-on-failure", "--no-color",
         "--warnings", "off"],
        capture_output=True, text=True, cwd=work,
        env={**os.environ, "SCHEMATHESIS_HOOKS": "fuzz_hooks", "PYTHONPATH": str(ROOT / "tests")})
    return done.returncode, done.stdout, time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=500, help="examples per operation (default 500)")
    args = parser.parse_args(argv)
    api_pw, inv_pw = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    failed = 0
    with tempfile.TemporaryDirectory(prefix="bench-fuzz-") as tmp:
        work = Path(tmp)
        lab, shop = MariaDB(work / "lab", server_id=1), MariaDB(work / "shop", server_id=2)
        cache = RedisServer(work / "redis")
        try:
            for server in (lab, shop, cache):
                server.start()
            load_schema(lab, api_pw, inv_pw)
            load_example(shop, "shop", api_pw, inv_pw)
            base = {"DB_USER": "cachetail_api", "DB_PASSWORD": api_pw, "REDIS_HOST": cache.host,
                    "REDIS_PORT": str(cache.port), "ADMIN_TOKEN": secrets.token_urlsafe(12)}
            for name, db, extra in (("lab", lab, {"DB_NAME": "cachelab"}),
                                    ("shop", shop, {"DB_NAME": "shop",
                                                    "CACHETAIL_CONFIG": str(ROOT / "examples" / "shop.toml")})):
                env = {**base, **extra, "DB_HOST": db.host, "DB_PORT": str(db.port), "CACHE_KEY_PREFIX": name}
                (work / name).mkdir(exist_ok=True)
                with api_process(env, work / name) as (url, _):
                    code, out, took = run(url, args.examples, work / name)
                cases = re.search(r"(\d+) generated", out)
                found = re.search(r"(\d+) failures? in", out)
                print(f"{name:5} {args.examples} examples/operation: {cases.group(1) if cases else '?'} test cases,"
                      f" {found.group(1) if found else 0} failures, {took:.0f} s", flush=True)
                if code != 0:
                    failed += 1
                    print(out[-4000:])
        finally:
            for server in (cache, shop, lab):
                server.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
