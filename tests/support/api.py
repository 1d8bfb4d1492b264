"""The API in tests: in-process on the test stack (``running``) or as a process
(``api_process``), metric deltas, error bodies; the ``anyio_backend`` and ``nearcache``
fixtures."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from starlette.applications import Starlette

from api.app import create_app
from api.fills import AfterSelect
from api.settings import ApiSettings
from cachetail.devstack import free_port, terminate
from support.waiting import WaitTimeout, wait_for, wait_for_async


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# Settings every running() app gets unless the test gives its own (see ``nearcache``).
_DEFAULTS: dict[str, str] = {}


@pytest.fixture
def nearcache(request: pytest.FixtureRequest) -> Iterator[str]:
    """The near-cache on ("1") or off ("0") in the apps running() starts.
    support.redis_kinds runs such a test with it on and off, on each Redis kind."""
    value = str(getattr(request, "param", "0"))
    _DEFAULTS["NEARCACHE"] = value
    yield value
    _DEFAULTS.pop("NEARCACHE", None)


@contextlib.asynccontextmanager
async def running(env: Mapping[str, str], after_select: AfterSelect | None = None,
                  **overrides: str) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    """The app with its lifespan running, and an httpx client talking to it in-process.
    With a near-cache, once it tracks (when Redis answers): its tests are about it."""
    settings = ApiSettings.from_env({**env, **_DEFAULTS, **overrides})
    app = create_app(settings, after_select=after_select)
    async with app.router.lifespan_context(app):
        near = app.state.services.near
        if near is not None:
            with contextlib.suppress(WaitTimeout):  # Redis may be down: the test's subject
                await wait_for_async(lambda: near.live, 2, "the near-cache tracking", 0.005)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
            yield app, client


def sample(name: str, **labels: str) -> float:
    """A sample of the in-process registry (0 when the label set was never used)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Delta:
    """How much some samples grew between its creation and a call."""

    def __init__(self, *names: tuple[str, dict[str, str]]) -> None:
        self._names = names
        self._start = [sample(n, **labels) for n, labels in names]

    def __call__(self) -> list[float]:
        return [sample(n, **labels) - s for (n, labels), s in zip(self._names, self._start, strict=True)]


def selects(entity: str) -> tuple[str, dict[str, str]]:
    return "cachetail_mysql_queries_total", {"entity": entity, "result": "ok"}


def fills(entity: str, result: str) -> tuple[str, dict[str, str]]:
    return "cachetail_cache_fills_total", {"entity": entity, "result": result}


def assert_json_error(response: httpx.Response, status: int | None = None) -> dict[str, str]:
    assert 400 <= response.status_code < 600, response.status_code
    if status is not None:
        assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "detail"}, body
    lowered = response.text.lower()
    assert "select" not in lowered and "traceback" not in lowered
    return body


@contextlib.contextmanager
def api_process(env: Mapping[str, str], cwd: Path, *args: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``python -m api`` on a free port; yields its base URL once /health answers."""
    port = free_port()
    full_env = {**os.environ, **env, "API_PORT": str(port), "API_HOST": "127.0.0.1"}
    full_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    full_env.update({k: v for k, v in env.items() if k == "PROMETHEUS_MULTIPROC_DIR"})
    log = cwd / "api.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "api", "--no-access-log", *args],
                                cwd=cwd, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert proc.poll() is None, "exited"
        try:
            return httpx.get(url + "/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        try:
            wait_for(answers, 20, "/health", 0.1)
        except AssertionError as failed:
            raise AssertionError(f"api did not start ({failed}):\n{log.read_text()[-3000:]}") from None
        yield url, proc
    finally:
        terminate(proc)
