"""The invalidator in tests: the worker as a process (``WorkerProcess``, the ``workers``
fixture), its metrics scraped; keys put and read in bulk; the binlog's end."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cachetail.devstack import ROOT, free_port
from cachetail.keyspace import Keyspace
from support.waiting import wait_for

_prefixes = itertools.count(1)


def unique_prefix() -> str:
    return f"t{os.getpid()}x{next(_prefixes)}"


class WorkerProcess:
    """``python -m invalidator`` with an environment of its own; stdout+stderr to a log file."""

    def __init__(self, env: dict[str, str], tmp: Path, **overrides: str) -> None:
        self.prefix = overrides.pop("CACHE_KEY_PREFIX", None) or unique_prefix()
        self.port = free_port()
        self.env = {
            "PATH": os.environ.get("PATH", ""), **env,
            "CACHE_KEY_PREFIX": self.prefix,
            "INVALIDATOR_METRICS_PORT": str(self.port),
            "INVALIDATOR_STATE_DIR": str(tmp / "state"),
            "INVALIDATOR_HEARTBEAT_S": "1",
            "INVALIDATOR_RETRY_MAX_S": "0.5",
            # Tests put deliberately wrong values into Redis as markers; the auditor would
            # repair them.  Its own tests switch it on.
            "AUDIT": "false",
            "PYTHONUNBUFFERED": "1",
            **overrides,
        }
        self.keyspace = Keyspace(prefix=self.prefix)
        self.log_path = tmp / f"invalidator-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait_streaming: bool = True) -> WorkerProcess:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "invalidator", "--env-file", "/nonexistent"],
                                     env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        if wait_streaming:
            wait_for(lambda: self.metric("cachetail_invalidator_streaming") == 1 or self._died(),
                     20, "the worker streaming")
            assert self.proc.poll() is None, self.log()
        return self

    def _died(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> dict[str, float]:
        """Every sample as ``name{l="v",...}`` (labels sorted) -> value; {} when unreachable."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return {}
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out

    def metric(self, name: str, default: float = 0.0) -> float:
        return self.metrics().get(name, default)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout_s: float = 10) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"the worker did not stop within {timeout_s} s:\n{self.log()}") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def put_all(client: Any, values: dict[str, bytes]) -> None:
    """SET each key; one pipeline, split by slot on a cluster (MSET must stay in one slot)."""
    pipe = client.pipeline(transaction=False)
    for key, value in values.items():
        pipe.set(key, value)
    pipe.execute()


def get_all(client: Any, keys: list[str]) -> list[bytes | None]:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.get(key)
    return list(pipe.execute())


def master_position(conn: Any) -> tuple[str, int]:
    with conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        row = cur.fetchone()
    return str(row[0]), int(row[1])


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """``workers(env, **overrides)`` -> a started WorkerProcess, killed at teardown."""
    started: list[WorkerProcess] = []

    def make(env: dict[str, str], start: bool = True, wait_streaming: bool = True,
             **overrides: str) -> WorkerProcess:
        worker = WorkerProcess(env, tmp_path, **overrides)
        started.append(worker)
        return worker.start(wait_streaming) if start else worker

    yield make
    for worker in started:
        worker.kill()
