"""The token-bucket limiter: burst, refill, per-key isolation, bounded memory."""

from __future__ import annotations

import pytest

from server.clock import Clock
from server.errors import RateLimited
from server.ratelimit import RateLimiter


class FakeClock(Clock):
    """A clock that stands still until the test moves ``t``."""

    __slots__ = ("t",)

    def __init__(self) -> None:
        self.t = 1000.0

    def monotonic(self) -> float:
        return self.t


def test_burst_then_refill_at_the_configured_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(capacity=3, per_seconds=60, what="things", clock=clock)
    for _ in range(3):
        limiter.check("a")
    with pytest.raises(RateLimited) as info:
        limiter.check("a")
    assert info.value.retry_after == 20  # one token every 20 s
    assert info.value.headers() == {"Retry-After": "20"}
    clock.t += 19.9
    with pytest.raises(RateLimited):
        limiter.check("a")
    clock.t += 0.2
    limiter.check("a")


def test_keys_do_not_share_buckets() -> None:
    limiter = RateLimiter(capacity=1, per_seconds=60, what="things", clock=FakeClock())
    limiter.check("a")
    limiter.check("b")
    with pytest.raises(RateLimited):
        limiter.check("a")


def test_the_table_stays_bounded_and_drops_full_buckets_first() -> None:
    clock = FakeClock()
    limiter = RateLimiter(capacity=2, per_seconds=1, what="things", max_keys=100, clock=clock)
    limiter.check("busy")
    limiter.check("busy")
    for i in range(1000):
        limiter.check(f"k{i}")
        clock.t += 0.001
    assert len(limiter._buckets) <= 101
    # "busy" was drained long ago and refilled: forgetting it lost nothing.
    limiter.check("busy")


def test_a_caller_that_read_the_clock_hands_it_over() -> None:
    """Several buckets charged at one instant (a WebSocket frame) share one clock read."""

    class NoClock(Clock):
        def monotonic(self) -> float:
            raise AssertionError("the clock was read again")

    limiter = RateLimiter(capacity=2, per_seconds=60, what="things", clock=NoClock())
    limiter.check("a", 1.0, 1000.0)
    limiter.check("a", 1.0, 1000.0)
    with pytest.raises(RateLimited) as info:
        limiter.check("a", 1.0, 1010.0)  # a third of a token back after 10 s
    assert info.value.retry_after == pytest.approx(20)
    limiter.check("a", 1.0, 1030.0)
