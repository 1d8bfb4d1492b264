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


class _Poll:
    """One wait's deadline and last result (shown if time runs out)."""

    __slots__ = ("deadline", "last", "timeout_s", "what")

    def __init__(self, timeout_s: float, what: str) -> None:
        self.deadline = time.monotonic() + timeout_s
        self.timeout_s, self.what = timeout_s, what
        self.last: object = None

    def holds(self, value: object) -> bool:
        self.last = value
        return bool(value)

    def expire(self) -> None:
        if time.monotonic() >= self.deadline:
            raise WaitTimeout(self.what, self.timeout_s, self.last)


def wait_for(predicate: Callable[[], T], timeout_s: float = 10, what: str = "condition",
             interval: float = 0.01, ignoring: tuple[type[Exception], ...] = ()) -> T:
    """``predicate()``'s first truthy result, polled every ``interval`` s; an exception of
    ``ignoring`` (a server still starting) counts as not yet, and is shown if time runs out."""
    poll = _Poll(timeout_s, what)
    while True:
        try:
            if poll.holds(predicate()):
                return poll.last  # type: ignore[return-value]  # a truthy T
        except ignoring as exc:
            poll.last = exc
        poll.expire()
        time.sleep(interval)


async def wait_for_async(predicate: Callable[[], T | Awaitable[T]], timeout_s: float = 10,
                         what: str = "condition", interval: float = 0.01,
                         ignoring: tuple[type[Exception], ...] = ()) -> T:
    """:func:`wait_for` yielding to the loop between polls; ``predicate`` may return an
    awaitable (an async read, or ``asyncio.to_thread`` of a blocking one)."""
    poll = _Poll(timeout_s, what)
    while True:
        try:
            value = predicate()
            if poll.holds(await value if inspect.isawaitable(value) else value):
                return poll.last  # type: ignore[return-value]  # a truthy T
        except ignoring as exc:
            poll.last = exc
        poll.expire()
        await asyncio.sleep(interval)
