"""Batched hot-path metrics (metrics/batched.py) expose exactly what direct updates would."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from metrics import LATENCY_BUCKETS_S
from metrics.batched import Batch, FlushFirst

VALUES = [0.0, 0.00005, 0.0001, 0.0001000001, 0.003, 0.25, 2.5, 10.0, 10.5, 1e9]


def pair() -> tuple[CollectorRegistry, CollectorRegistry, Batch, list[object]]:
    direct, batched = CollectorRegistry(), CollectorRegistry()
    batch = Batch()
    batched.register(FlushFirst(batch))
    made = []
    for registry in (direct, batched):
        made.append((Counter("c", "c", ["l"], registry=registry),
                     Histogram("h", "h", ["l"], registry=registry, buckets=LATENCY_BUCKETS_S)))
    return direct, batched, batch, made


def test_batched_updates_expose_what_direct_ones_do() -> None:
    direct, batched, batch, ((dc, dh), (bc, bh)) = pair()
    counted, timed = batch.counter(bc.labels("x")), batch.histogram(bh.labels("x"))
    for value in VALUES:  # outside an event loop each update flushes at once
        dc.labels("x").inc()
        dh.labels("x").observe(value)
        counted.inc()
        timed.observe(value)
    assert _without_created(generate_latest(batched)) == _without_created(generate_latest(direct))


def test_inside_a_loop_a_turn_is_flushed_once_and_a_collection_sees_it_at_once() -> None:
    direct, batched, batch, ((dc, dh), (bc, bh)) = pair()
    counted, timed = batch.counter(bc.labels("y")), batch.histogram(bh.labels("y"))

    async def turn() -> tuple[float | None, float | None]:
        for value in VALUES:
            counted.inc()
            timed.observe(value)
            dc.labels("y").inc()
            dh.labels("y").observe(value)
        pending = bh.labels("y")._sum.get()  # not written yet: this turn has not ended
        seen = batched.get_sample_value("c_total", {"l": "y"})  # a collection flushes first
        return pending, seen

    pending, seen = asyncio.run(turn())
    assert pending == 0.0 and seen == len(VALUES)
    assert _without_created(generate_latest(batched)) == _without_created(generate_latest(direct))


def test_multiprocess_files_get_the_batched_values(tmp_path: Path) -> None:
    """In multiprocess mode (API workers) the children write to files; a flush writes them."""
    script = textwrap.dedent(f"""
        import asyncio
        from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
        from metrics.batched import Batch
        batch = Batch()
        c = batch.counter(Counter("mc", "c"))
        h = batch.histogram(Histogram("mh", "h", buckets=(0.1, 1.0)))
        async def main():
            for v in (0.05, 0.5, 5.0):
                c.inc(); h.observe(v)
        asyncio.run(main())
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path={str(tmp_path)!r})
        print(generate_latest(registry).decode())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                          env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
                               "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    lines = done.stdout.splitlines()
    assert "mc_total 3.0" in lines
    assert 'mh_bucket{le="0.1"} 1.0' in lines and 'mh_bucket{le="1.0"} 2.0' in lines
    assert 'mh_bucket{le="+Inf"} 3.0' in lines and "mh_sum 5.55" in lines


def _without_created(text: bytes) -> list[bytes]:
    return [line for line in text.splitlines() if b"_created" not in line]
