"""The terminal: one progress bar per phase (rich), log lines, and the summary table."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


class Phase:
    def __init__(self, progress: Progress, task: Any) -> None:
        self._progress, self._task = progress, task

    def advance(self, n: float = 1) -> None:
        self._progress.advance(self._task, n)

    def note(self, text: str) -> None:
        self._progress.update(self._task, note=text)


class UI:
    def __init__(self, quiet: bool = False) -> None:
        self.console = Console(stderr=False, quiet=quiet, highlight=False)

    def log(self, text: str) -> None:
        self.console.print(text)

    @contextlib.contextmanager
    def phase(self, name: str, total: float, timed: bool = True) -> Iterator[Phase]:
        """A progress bar for one phase.  ``timed``: the bar follows the clock up to
        ``total`` seconds (the load runs in other processes); otherwise the caller
        advances it by items."""
        progress = Progress(TextColumn("{task.description:<34}"), BarColumn(),
                            TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                            TextColumn("{task.fields[note]}"), console=self.console,
                            transient=False)
        task = progress.add_task(name, total=total, note="")
        stop = threading.Event()

        def tick() -> None:
            start = time.monotonic()
            while not stop.wait(0.1):
                progress.update(task, completed=min(total, time.monotonic() - start))

        with progress:
            ticker = threading.Thread(target=tick, daemon=True) if timed else None
            if ticker:
                ticker.start()
            try:
                yield Phase(progress, task)
            finally:
                stop.set()
                if ticker:
                    ticker.join()
                progress.update(task, completed=total)

    def table(self, title: str, columns: list[str], rows: list[list[str]]) -> None:
        t = Table(title=title, title_justify="left", show_lines=False)
        for i, c in enumerate(columns):
            t.add_column(c, justify="left" if i == 0 else "right")
        for r in rows:
            t.add_row(*r)
        self.console.print(t)


def ms(seconds: float | None, digits: int = 2) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.{digits}f}"


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def num(x: float | None, digits: int = 0) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"
