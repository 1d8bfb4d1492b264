"""A background thread of the worker (the auditor, the follow-lag poller)."""

from __future__ import annotations

import threading
from typing import Self


class Daemon:
    """A daemon thread that runs :meth:`run` until :meth:`close` sets ``stopped``."""

    def __init__(self, name: str) -> None:
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, name=name, daemon=True)

    def start(self) -> Self:
        self.thread.start()
        return self

    def run(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stopped.set()
