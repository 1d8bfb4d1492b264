"""Record what the lab's API answers to a fixed script of requests, and which Redis keys it
leaves: ``tests/golden/lab_api.json``.  tests/test_lab_compat.py replays the script against
the current code and compares, so the lab keeps every route, status, header, body byte and
user key it had before its tables became a declaration (cachetail.toml).

    .venv/bin/python tests/golden/record_lab.py      # rewrites the golden file (own servers)
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

REQUESTS: list[tuple[str, str, dict[str, str]]] = [
    ("GET", "/user/42", {}), ("GET", "/user/42", {}), ("GET", "/user/42/nocache", {}),
    ("GET", "/user/10000", {}), ("GET", "/user/1", {}),
    ("GET", "/user/99999", {}), ("GET", "/user/99999", {}), ("GET", "/user/99999/nocache", {}),
    ("GET", "/user/abc", {}), ("GET", "/user/-1", {}), ("GET", "/user/4294967296", {}),
    ("GET", "/user/%EF%BC%91", {}), ("GET", "/user/1?x=1", {}), ("GET", "/user/1/nocache?x=1", {}),
    ("GET", "/products", {}), ("GET", "/products", {}),
    ("GET", "/products?category=books", {}), ("GET", "/products?category=books", {}),
    ("GET", "/products?category=nothing-here", {}),
    ("GET", "/products?category=", {}), ("GET", "/products?category=a&category=b", {}),
    ("GET", "/products?category=" + "x" * 51, {}), ("GET", "/products?foo=1", {}),
    ("POST", "/cache/clear", {}), ("POST", "/cache/clear", {"Authorization": "Bearer wrong"}),
    ("GET", "/nowhere", {}), ("POST", "/user/1", {}),
]
HEADERS = ("content-type", "content-length", "x-cache", "x-cache-tier", "allow", "www-authenticate")


async def replay(env: dict[str, str]) -> list[dict[str, Any]]:
    from support.api import running

    out = []
    async with running(env, NEARCACHE="1") as (_, client):
        for method, path, headers in REQUESTS:
            r = await client.request(method, path, headers=headers)
            out.append({"request": f"{method} {path}", "status": r.status_code,
                        "headers": {h: r.headers[h] for h in HEADERS if h in r.headers},
                        "body": r.content.decode("utf-8", errors="replace")})
    return out


def main() -> None:
    import redis

    from cachetail.devstack import MariaDB, RedisServer, load_schema

    with tempfile.TemporaryDirectory() as tmp:
        db = MariaDB(Path(tmp) / "db", server_id=7)
        cache = RedisServer(Path(tmp) / "redis")
        db.start()
        cache.start()
        try:
            load_schema(db, "api-pw", "inv-pw")
            env = {"DB_HOST": db.host, "DB_PORT": str(db.port), "DB_NAME": "cachelab",
                   "DB_USER": "cachetail_api", "DB_PASSWORD": "api-pw", "REDIS_HOST": cache.host,
                   "REDIS_PORT": str(cache.port), "ADMIN_TOKEN": "golden-token-0123456789",
                   "REDIS_TIMEOUT_S": "2"}
            answers = asyncio.run(replay(env))
            keys = sorted(k.decode() for k in redis.Redis(host=cache.host, port=cache.port).keys("ct:*"))
        finally:
            cache.stop()
            db.stop()
    out = ROOT / "tests" / "golden" / "lab_api.json"
    out.write_text(json.dumps({"answers": answers, "redis_keys": keys}, indent=1, ensure_ascii=False) + "\n")
    print(f"{len(answers)} answers and {len(keys)} keys -> {out}")


if __name__ == "__main__":
    main()
