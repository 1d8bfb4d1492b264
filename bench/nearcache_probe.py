"""The real API with a probe beside it, for measuring when invalidations reach a worker.

Run it as the API is run (``uvicorn bench.nearcache_probe:app --workers 1`` with the
API's environment).  Every path is the API's, except:

    POST /_probe/arm        start recording (and forget what was recorded)
    GET  /_probe/arrivals   {"arrivals": {key: CLOCK_MONOTONIC seconds when its invalidation
                            was applied}, "resets": times the near-cache was emptied since armed}

Recording uses the near-cache's measurement seam (``NearCache.on_invalidated``),
which runs right after an invalidation message was applied.  CLOCK_MONOTONIC is
one clock for every process on the machine, so the bench compares these times
with the time it sent each DEL.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from api.app import create_app
from api.settings import ApiSettings
from cachetail.settings import load_environment


class Probe:
    def __init__(self) -> None:
        self.api: Starlette = create_app(ApiSettings.from_env(load_environment()))
        self.arrivals: dict[str, float] = {}
        self.resets_at_arm = 0.0

    def record(self, keys: Sequence[bytes] | None) -> None:
        now = time.monotonic()
        for key in keys or ():
            self.arrivals.setdefault(key.decode(), now)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/_probe/"):
            await self.api(scope, receive, send)
            return
        near = self.api.state.services.near
        if path == "/_probe/arm" and near is not None:
            self.arrivals.clear()
            self.resets_at_arm = _resets()
            near.on_invalidated = self.record
            body: dict[str, object] = {"live": near.live}
        elif path == "/_probe/arrivals":
            body = {"arrivals": self.arrivals, "resets": _resets() - self.resets_at_arm}
        else:
            body = {"error": "no near-cache"}
        payload = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})


def _resets() -> float:
    return sum(s.value for family in REGISTRY.collect() if family.name == "cachetail_nearcache_resets"
               for s in family.samples if s.name.endswith("_total"))


app = Probe()
