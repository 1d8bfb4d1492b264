"""cachetail.backoff: exponential, capped, equal jitter, and a reset."""

from __future__ import annotations

import pytest

from cachetail.backoff import Backoff


def test_delays_double_up_to_the_cap_each_drawn_from_its_upper_half() -> None:
    backoff = Backoff(0.1, 1.0)
    bounds = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    for _ in range(200):
        backoff.reset()
        for bound, delay in zip(bounds, backoff, strict=False):
            assert bound / 2 <= delay <= bound


def test_the_jitter_spreads_delays_over_the_upper_half() -> None:
    delays = [next(Backoff(1.0, 1.0)) for _ in range(500)]
    assert min(delays) < 0.6 and max(delays) > 0.9


def test_reset_starts_over() -> None:
    backoff = Backoff(0.05, 10)
    for _ in range(6):
        next(backoff)
    assert next(backoff) > 1.0
    backoff.reset()
    assert next(backoff) <= 0.05


@pytest.mark.parametrize(("first_s", "cap_s"), [(0, 1), (-1, 1), (2, 1)])
def test_nonsense_bounds_are_refused(first_s: float, cap_s: float) -> None:
    with pytest.raises(ValueError, match="first_s"):
        Backoff(first_s, cap_s)
