"""Bad input, the error shape, the docs pages and their local assets, /metrics."""

from __future__ import annotations

import re

import pytest

from cachetail.keyspace import Keyspace
from support.api import assert_json_error, running
from support.lab import products_generation, products_page

KEYS = Keyspace()

pytestmark = pytest.mark.anyio

BAD_REQUESTS = [
    ("GET", "/user/abc", 400),
    ("GET", "/user/0", 400),
    ("GET", "/user/-1", 400),
    ("GET", "/user/4294967296", 400),
    ("GET", "/user/99999999999999999999999", 400),
    ("GET", "/user/1.5", 400),
    ("GET", "/user/+1", 400),
    ("GET", "/user/%201", 400),
    ("GET", "/user/%D9%A1", 400),  # ARABIC-INDIC DIGIT ONE: isdigit() but not an id
    ("GET", "/user/1%27%20OR%201=1", 400),
    ("GET", "/user/abc/nocache", 400),
    ("GET", "/user/0/nocache", 400),
    ("GET", "/user/1?debug=1", 400),
    ("GET", "/products?sort=price", 400),
    ("GET", "/products?category=", 400),
    ("GET", "/products?category=" + "x" * 51, 400),
    ("GET", "/products?category=a%00b", 400),
    ("GET", "/products?category=a%0Ab", 400),
    ("GET", "/products?category=a&category=b", 400),
    ("GET", "/nope", 404),
    ("GET", "/user", 404),
    ("GET", "/user/1/extra/path", 404),
    ("GET", "/static/docs/../../settings.py", 404),
    ("POST", "/user/1", 405),
    ("DELETE", "/products", 405),
    ("GET", "/cache/clear", 405),
    ("PUT", "/health", 405),
]


async def test_bad_input_is_4xx_json(stack, redis_client, db) -> None:
    async with running(stack.api_env()) as (_, client):
        for method, path, status in BAD_REQUESTS:
            response = await client.request(method, path)
            assert response.status_code == status, (method, path, response.text)
            assert_json_error(response, status)
        allowed = (await client.post("/user/1")).headers.get("allow", "")
        longest = await client.get("/products", params={"category": "x" * 50})
    assert "GET" in allowed
    assert (longest.status_code, longest.json()) == (200, [])
    # only the valid variant was cached (beside the generation its fill created)
    assert sorted(redis_client.keys("ct:*")) == sorted(
        k.encode() for k in (products_page(KEYS, db, "x" * 50), products_generation(KEYS, db, "x" * 50)))


def _assets(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', page)


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
async def test_docs_pages_use_only_local_assets(stack, redis_client, path) -> None:
    async with running(stack.api_env()) as (_, client):
        page = await client.get(path)
        assets = _assets(page.text)
        fetched = {url: await client.get(url) for url in assets}
        schema = await client.get("/openapi.json")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "img-src 'self' data:" in page.headers["content-security-policy"]
    assert "//" not in page.text.replace("</", "")  # no scheme-relative or absolute URL
    assert assets and all(url.startswith("/static/docs/") for url in assets)
    assert any(url.endswith(".js") for url in assets)
    for url, response in fetched.items():
        assert response.status_code == 200 and len(response.content) > 500, url
    assert "/openapi.json" in page.text
    spec = schema.json()
    assert spec["openapi"].startswith("3.")
    assert {"/user/{id}", "/user/{id}/nocache", "/products", "/cache/clear", "/health"} <= set(spec["paths"])
    assert spec["components"]["schemas"]["user"]["properties"]["id"] == {"type": "integer", "minimum": 1,
                                                                         "maximum": 4294967295}


def test_docs_never_import_django() -> None:
    import subprocess
    import sys

    code = ("import sys, api.docs; api.docs.static_files();"
            "sys.exit(1 if any(m.split('.')[0] in ('django', 'drf_spectacular_sidecar')"
            " for m in sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


async def test_metrics_names_and_route_labels(stack, redis_client) -> None:
    async with running(stack.api_env()) as (_, client):
        await client.get("/user/3")
        await client.get("/user/3")
        await client.get("/definitely/not/here")
        response = await client.get("/metrics")
    text = response.text
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    for name in ("cachetail_cache_lookups_total", "cachetail_cache_lookup_duration_seconds_bucket",
                 "cachetail_cache_fills_total", "cachetail_mysql_queries_total",
                 "cachetail_mysql_query_duration_seconds_bucket", "cachetail_http_requests_total",
                 "cachetail_http_request_duration_seconds_bucket"):
        assert f"\n{name}{{" in text, name
    assert 'route="/user/{id}"' in text and 'route="unmatched"' in text
    assert "/definitely/not/here" not in text  # raw paths never become labels
