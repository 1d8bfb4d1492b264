"""The OpenAPI document tells the truth: schemathesis, every check, against both declarations.

The real API (a process) on the lab (cachetail.toml, the session's MariaDB) and on the shop
(examples/shop.toml on sql/examples/shop.sql).  Schemathesis draws requests from the
document, schema-valid ones and schema-violating ones, and checks every answer: no 5xx,
documented statuses and headers, bodies that match their schemas, valid data accepted,
invalid data rejected.  Few examples per operation here (``FUZZ_EXAMPLES``, default 25);
``bench/fuzz.py`` runs many.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cachetail.devstack import MariaDB
from support.api import api_process
from support.shop import start_shop
from support.stack import Stack

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))


@pytest.fixture(scope="module")
def shop_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDB]:
    server = start_shop(tmp_path_factory.mktemp("fuzz-shop"))
    yield server
    server.kill()


@pytest.fixture(scope="module", params=["lab", "shop"])
def declared_api(request: pytest.FixtureRequest, single_stack: Stack,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = single_stack.api_env()
    if request.param == "shop":
        shop: MariaDB = request.getfixturevalue("shop_server")
        env = {**env, "DB_HOST": shop.host, "DB_PORT": str(shop.port), "DB_NAME": "shop",
               "CACHETAIL_CONFIG": str(ROOT / "examples" / "shop.toml")}
    env["CACHE_KEY_PREFIX"] = f"fuzz{request.param}"
    with api_process(env, tmp_path_factory.mktemp(f"fuzz-{request.param}")) as (url, _):
        yield url


def fuzz(url: str, examples: int, workdir: Path) -> subprocess.CompletedProcess[str]:
    """``st run`` against the API's own document: every check, valid and invalid data."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "st"), "run", f"{url}/openapi.json", "--checks", "all",
         "--mode", "all", "--max-examples", str(examples), "--seed", "20261205", "--continue-on-failure",
         "--no-color", "--warnings", "off", "--report", "junit", "--report-dir", str(workdir)],
        capture_output=True, text=True, timeout=900, cwd=workdir,
        env={**os.environ, "SCHEMATHESIS_HOOKS": "fuzz_hooks", "PYTHONPATH": str(Path(__file__).parent)})


def test_the_fuzzer_finds_nothing_wrong(declared_api: str, tmp_path: Path) -> None:
    done = fuzz(declared_api, EXAMPLES, tmp_path)
    summary = done.stdout[-6000:]
    assert done.returncode == 0, summary
    assert "5xx" not in summary and " passed" in summary, summary
