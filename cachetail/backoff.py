"""Retry delays: exponential, capped, with equal jitter.

Every reconnect loop in both processes waits through one of these.  Equal jitter
(the n-th delay drawn from [d/2, d], d = first_s * 2**n up to cap_s) keeps half of
each delay, so a retry never comes back at once, and spreads the other half so that
the workers that lost one server do not return to it in step.
"""

from __future__ import annotations

import asyncio
import random


class Backoff:
    """The delays before successive retries; ``reset()`` once a connection proved stable."""

    __slots__ = ("cap_s", "first_s", "_delay_s")

    def __init__(self, first_s: float, cap_s: float) -> None:
        if not 0 < first_s <= cap_s:
            raise ValueError(f"backoff needs 0 < first_s <= cap_s, got {first_s} and {cap_s}")
        self.first_s = first_s
        self.cap_s = cap_s
        self._delay_s = first_s

    def __iter__(self) -> Backoff:
        return self

    def __next__(self) -> float:
        delay = self._delay_s
        self._delay_s = min(self.cap_s, delay * 2)
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self._delay_s = self.first_s

    async def sleep(self) -> None:
        await asyncio.sleep(next(self))
