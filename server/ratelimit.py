"""In-memory token-bucket rate limiter (per relay process).

Each key (a device pk, an IP address) has a bucket of ``capacity`` tokens refilled at
``rate`` tokens per second. The table is bounded: when it grows past ``max_keys``, buckets
that have refilled completely (they carry no information) are dropped first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable

from server.errors import RateLimited

__all__ = ["RateLimiter"]


class RateLimiter:
    """A token bucket per key."""

    def __init__(
        self,
        *,
        capacity: float,
        per_seconds: float,
        what: str,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = float(capacity)
        self.rate = float(capacity) / per_seconds
        self.what = what
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: dict[Hashable, tuple[float, float]] = {}

    def check(self, key: Hashable, cost: float = 1.0) -> None:
        """Take ``cost`` tokens for ``key`` or raise :class:`RateLimited` with a retry delay."""
        now = self._clock()
        tokens, last = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        if tokens < cost:
            self._buckets[key] = (tokens, now)
            raise RateLimited(
                f"too many {self.what}; slow down", retry_after=(cost - tokens) / self.rate
            )
        self._buckets[key] = (tokens - cost, now)
        if len(self._buckets) > self.max_keys:
            self._prune(now)

    def _prune(self, now: float) -> None:
        full = [
            k
            for k, (tokens, last) in self._buckets.items()
            if tokens + (now - last) * self.rate >= self.capacity
        ]
        for k in full:
            del self._buckets[k]
        while len(self._buckets) > self.max_keys:
            self._buckets.pop(next(iter(self._buckets)))
