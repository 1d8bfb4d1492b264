"""Drive wrk (the Debian package) over a list of paths and read its figures back as JSON."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Each wrk thread has its own Lua state: it walks the paths from its own offset and,
# when done, the main state prints every figure as one JSON line.
_SCRIPT = """
local paths = {%(paths)s}
local i = 0
local counter = 0
setup = function(thread)
  thread:set("offset", counter * 7919)
  counter = counter + 1
end
init = function(args) i = tonumber(offset) or 0 end
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i %% #paths) + 1])
end
done = function(summary, latency, requests)
  local q = {}
  for _, p in ipairs({50, 75, 90, 99, 99.9}) do
    q[#q + 1] = string.format('"%%g": %%d', p, latency:percentile(p))
  end
  io.write(string.format(
    'WRK_JSON {"requests": %%d, "duration_us": %%d, "bytes": %%d, ' ..
    '"errors": {"connect": %%d, "read": %%d, "write": %%d, "status": %%d, "timeout": %%d}, ' ..
    '"latency_us": {"min": %%d, "max": %%d, "mean": %%f, "stdev": %%f, "percentiles": {%%s}}}\\n',
    summary.requests, summary.duration, summary.bytes,
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout,
    latency.min, latency.max, latency.mean, latency.stdev, table.concat(q, ", ")))
end
"""


def available() -> str | None:
    return shutil.which("wrk")


def run(url: str, paths: Sequence[str], *, duration_s: float, connections: int, threads: int,
        timeout_s: float = 5.0) -> dict[str, Any]:
    """wrk -t threads -c connections -d duration over ``paths``; requests per second,
    latency percentiles (seconds) and errors."""
    exe = available()
    if exe is None:
        raise RuntimeError("wrk is not installed (Debian package wrk)")
    lua = _SCRIPT % {"paths": ", ".join(json.dumps(p) for p in paths)}
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(lua)
        script = Path(f.name)
    try:
        proc = subprocess.run(
            [exe, "-t", str(threads), "-c", str(connections), "-d", f"{duration_s:g}s",
             "--timeout", f"{timeout_s:g}s", "-s", str(script), url],
            capture_output=True, text=True, timeout=duration_s + 60)
    finally:
        script.unlink(missing_ok=True)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-500:]}")
    raw = json.loads(line[len("WRK_JSON "):])
    lat = raw["latency_us"]
    seconds = raw["duration_us"] / 1e6
    return {
        "requests": raw["requests"],
        "duration_s": seconds,
        "throughput_rps": raw["requests"] / seconds if seconds else None,
        "errors": raw["errors"],
        "latency": {"mean_s": lat["mean"] / 1e6, "stdev_s": lat["stdev"] / 1e6,
                    "min_s": lat["min"] / 1e6, "max_s": lat["max"] / 1e6,
                    **{f"p{k.replace('.', '_')}_s": v / 1e6 for k, v in lat["percentiles"].items()}},
        "threads": threads, "connections": connections,
    }


@contextmanager
def busy_core(on: bool = True) -> Iterator[None]:
    """One core kept busy (a spinning process) while the block runs: a host doing other work."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if on else None
    try:
        yield
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
