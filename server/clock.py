"""The relay's one clock: the only module in ``server/`` that reads the system's time.

Everything that needs "now" — token, challenge, invite, envelope and attachment expiry,
rate-limit buckets, push coalescing, the slow-consumer watchdog, latency metrics — is given
a :class:`Clock`: long-lived objects take one in their constructor, request handlers get it
from :data:`server.deps.ClockDep` (the app's ``RelayState.clock``) and hand service functions
a plain ``now``. ``create_app(settings, clock=...)`` chooses it, so a test can move the whole
relay forward in time without sleeping::

    clock = ShiftedClock()
    app = create_app(settings, clock=clock)
    ...
    clock.advance(settings.limits.token_ttl_seconds)   # every token has now expired

The event loop's own clock (``asyncio.sleep``, timeouts, ``loop.call_later``) schedules
work; it is not read as "now" (``tests/server/test_architecture.py`` checks the rule).
"""

from __future__ import annotations

import time

__all__ = ["Clock", "ShiftedClock"]


class Clock:
    """The system clock: wall-clock Unix time and a monotonic clock for intervals."""

    __slots__ = ()

    def time(self) -> float:
        """Unix time in seconds (wall clock)."""
        return time.time()

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (intervals, durations, buckets)."""
        return time.monotonic()

    def now(self) -> int:
        """Unix time in whole seconds (what the database stores for tokens, invites...)."""
        return int(self.time())

    def now_ms(self) -> int:
        """Unix time in milliseconds (envelope timestamps and expiry)."""
        return int(self.time() * 1000)


class ShiftedClock(Clock):
    """The system clock moved forward by :meth:`advance` (both wall and monotonic time).

    Time keeps flowing underneath, so deadlines and timeouts still pass; advancing jumps
    every expiry, window and bucket of the relay ahead at once.
    """

    __slots__ = ("offset",)

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward."""
        if seconds < 0:
            raise ValueError("a clock only moves forward")
        self.offset += seconds

    def time(self) -> float:
        """Unix time in seconds, shifted."""
        return time.time() + self.offset

    def monotonic(self) -> float:
        """The monotonic clock, shifted."""
        return time.monotonic() + self.offset
