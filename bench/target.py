"""The stack under test: the API, the invalidator's /metrics and MySQL, reached and checked."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import httpx

from bench.httpclient import Connection, Response
from bench.promdiff import Scrape, parse


class BenchError(RuntimeError):
    """A condition that stops the benchmark with one line and exit status 2."""


@dataclass(frozen=True)
class DbConfig:
    host: str
    port: int
    user: str
    password: str
    database: str

    @classmethod
    def from_url(cls, url: str) -> DbConfig:
        p = urlsplit(url)
        if p.scheme not in ("mysql", "mariadb", "mysql+pymysql") or not p.hostname:
            raise BenchError(f"--db-url: expected mysql://USER:PASSWORD@HOST:PORT/DB, got {url!r}")
        return cls(p.hostname, p.port or 3306, unquote(p.username or "root"),
                   unquote(p.password or ""), p.path.lstrip("/") or "cachelab")

    def connect(self):
        import pymysql

        return pymysql.connect(host=self.host, port=self.port, user=self.user,
                               password=self.password, database=self.database,
                               autocommit=True, connect_timeout=5, charset="utf8mb4")

    def __repr__(self) -> str:  # never the password
        return f"DbConfig({self.user}@{self.host}:{self.port}/{self.database})"


class Target:
    def __init__(self, api_url: str, invalidator_url: str, admin_token: str | None) -> None:
        self.api_url = api_url.rstrip("/")
        self.invalidator_url = invalidator_url.rstrip("/")
        self._token = admin_token
        self.http = httpx.Client(timeout=httpx.Timeout(15.0, connect=3.0))

    def close(self) -> None:
        self.http.close()

    # ------------------------------------------------------------ checks

    def _get(self, url: str, what: str) -> httpx.Response:
        try:
            return self.http.get(url)
        except httpx.HTTPError as exc:
            raise BenchError(f"the {what} does not answer at {url}: {_reason(exc)}") from None

    def check_api(self) -> dict:
        r = self._get(f"{self.api_url}/health", "API")
        if r.status_code != 200:
            raise BenchError(f"the API at {self.api_url} is not healthy: /health answered "
                             f"{r.status_code} {r.text[:200]}")
        m = self._get(f"{self.api_url}/metrics", "API")
        if m.status_code != 200 or "cachetail_http_request" not in m.text:
            raise BenchError(f"{self.api_url}/metrics answered {m.status_code} without "
                             "cachetail_http_request metrics: is this cachetail's API?")
        return r.json()

    def check_invalidator(self) -> None:
        r = self._get(f"{self.invalidator_url}/metrics", "invalidator")
        if r.status_code != 200 or "cachetail_invalidator_" not in r.text:
            raise BenchError(f"{self.invalidator_url}/metrics answered {r.status_code} without "
                             "cachetail_invalidator_ metrics: is this the invalidator?")

    def check_token(self) -> None:
        """Clearing the cache is what the scenarios need the token for: try it."""
        self.clear_cache()

    # ------------------------------------------------------------ actions

    def scrape_api(self) -> Scrape:
        return parse(self._get(f"{self.api_url}/metrics", "API").text)

    def scrape_invalidator(self) -> Scrape:
        return parse(self._get(f"{self.invalidator_url}/metrics", "invalidator").text)

    def clear_cache(self) -> int:
        if not self._token:
            raise BenchError("no admin token: pass --admin-token or set ADMIN_TOKEN "
                             "(environment or .env)")
        url = f"{self.api_url}/cache/clear"
        try:
            r = self.http.post(url, headers={"Authorization": f"Bearer {self._token}"})
        except httpx.HTTPError as exc:
            raise BenchError(f"the API does not answer at {url}: {_reason(exc)}") from None
        if r.status_code in (401, 403):
            raise BenchError(f"the admin token was refused: POST /cache/clear answered "
                             f"{r.status_code} ({_error_text(r)})")
        if r.status_code != 200:
            raise BenchError(f"POST /cache/clear answered {r.status_code}: {r.text[:200]}")
        return int(r.json().get("removed", 0))

    def fetch_all(self, paths: Sequence[str], connections: int = 16) -> list[Response]:
        """GET every path once (for warming), ``connections`` at a time; in order."""
        return asyncio.run(fetch_all(self.api_url, paths, connections))


async def fetch_all(url: str, paths: Sequence[str], connections: int = 16) -> list[Response]:
    p = urlsplit(url)
    out: list[Response | None] = [None] * len(paths)
    queue = list(enumerate(paths))[::-1]

    async def worker() -> None:
        conn = Connection(p.hostname or "127.0.0.1", p.port or 80)
        try:
            while queue:
                i, path = queue.pop()
                out[i] = await conn.get(path)
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(max(1, min(connections, len(paths))))))
    return [r for r in out if r is not None]


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    if "refused" in text.lower():
        return "connection refused"
    return text.splitlines()[0][:200]


def _error_text(r: httpx.Response) -> str:
    try:
        body = r.json()
        return str(body.get("detail") or body.get("error") or body)[:200]
    except ValueError:
        return r.text[:200]
