"""``@pytest.mark.redis_kinds("single", "cluster")``: a test runs once on a single Redis node
and once on a Redis Cluster of 3 primaries + 3 replicas (started once per session);
``stack`` and ``redis_client`` follow its kind.  A test taking ``nearcache`` runs with the
near-cache on and off, on each kind named."""

from __future__ import annotations

import pytest


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("redis_kinds")
    kinds = marker.args if marker is not None and "stack" in metafunc.fixturenames else None
    if "nearcache" in metafunc.fixturenames:
        # near-cache on and off, on each Redis kind named
        combos = [(kind, near) for kind in (kinds or ("single",)) for near in ("1", "0")]
        ids = [f"{kind}-{'near' if near == '1' else 'nonear'}" for kind, near in combos]
        if kinds:
            metafunc.parametrize(("redis_kind", "nearcache"), combos, ids=ids, indirect=["nearcache"])
        else:
            metafunc.parametrize("nearcache", [n for _, n in combos], ids=ids, indirect=True)
    elif kinds:
        metafunc.parametrize("redis_kind", kinds)


@pytest.fixture
def redis_kind() -> str:
    return "single"
