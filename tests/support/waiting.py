"""Waiting on a state: poll a predicate until it holds, never a fixed sleep.

``wait_for`` blocks; ``wait_for_async`` is the same for async tests, where blocking would
stop the app, tracker or client running on the loop the test awaits on.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """The state was not reached in time; a test failure, not an error of the test."""

    def __init__(self, what: str, timeout_s: float, last: object) -> None:
        super().__init__(f"timed out after {timeout_s} s waiting for {what} (last: {last!r})")


def wait_for(predicate: Callable[[], T], timeout_s: float = 10, what: str = "condition",
             interval: float = 0.01, ignoring: tuple[type[Exception], ...] = ()) -> T:
    """``predicate()``'s first truthy result, polled every ``interval`` s; an exception of
    ``ignoring`` (a server still starting) counts as not yet, and is shown if time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            last: object = predicate()
        except ignoring as exc:
            last = exc  # not yet; shown if time runs out
        else:
            if last:
                return last  # type: ignore[return-value]  # a truthy T
        if time.monotonic() >= deadline:
            raise WaitTimeout(what, timeout_s, last)
        time.sleep(interval)


async def wait_for_async(predicate: Callable[[], T | Awaitable[T]], timeout_s: float = 10,
                         what: str = "condition", interval: float = 0.01,
                         ignoring: tuple[type[Exception], ...] = ()) -> T:
    """:func:`wait_for` yielding to the loop between polls; ``predicate`` may return an
    awaitable (an async read, or ``asyncio.to_thread`` of a blocking one)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            last: object = predicate()
            if inspect.isawaitable(last):
                last = await last
        except ignoring as exc:
            last = exc  # not yet; shown if time runs out
        else:
            if last:
                return last  # type: ignore[return-value]  # a truthy T
        if time.monotonic() >= deadline:
            raise WaitTimeout(what, timeout_s, last)
        await asyncio.sleep(interval)
