"""Token-bucket rate limiters: per relay process, or shared by all processes through Redis.

Each key (a device pk, an IP address) has a bucket of ``capacity`` tokens refilled at
``rate`` tokens per second; a request takes one token or is refused with
:class:`~server.errors.RateLimited` (429, ``Retry-After``).

* :class:`RateLimiter` keeps the buckets in memory (one process). The table is bounded:
  when it grows past ``max_keys``, buckets that have refilled completely (they carry no
  information) are dropped first.
* :class:`SharedRateLimiter` keeps them in Redis (when ``redis_url`` is configured), so
  that every relay process draws from the same bucket: one Lua script per request reads,
  refills and takes atomically, on Redis's clock, and lets an idle bucket expire once it
  would be full again. Keys are ``<redis_prefix>rl:<name>:<key>``. If Redis fails or is
  slow, that request is checked against the process's own :class:`RateLimiter` instead (a
  degraded, per-process limit; logged at most once a minute), never refused for it.

Routes call ``await limiter.acquire(key)`` on either kind.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable
from typing import Any, Protocol

from server.clock import Clock
from server.errors import RateLimited
from server.logs import log_event

__all__ = ["Limiter", "RateLimiter", "SharedRateLimiter"]


class Limiter(Protocol):
    """What routes need from a rate limiter."""

    what: str

    async def acquire(self, key: Hashable, cost: float = 1.0) -> None:
        """Take ``cost`` tokens for ``key`` or raise :class:`RateLimited`."""
        ...


class RateLimiter:
    """A token bucket per key."""

    def __init__(
        self,
        *,
        capacity: float,
        per_seconds: float,
        what: str,
        max_keys: int = 100_000,
        clock: Clock,
    ) -> None:
        self.capacity = float(capacity)
        self.rate = float(capacity) / per_seconds
        self.what = what
        self.max_keys = max_keys
        self.clock = clock
        #: key -> [tokens, last refill time] (a list: updated in place on every check)
        self._buckets: dict[Hashable, list[float]] = {}

    async def acquire(self, key: Hashable, cost: float = 1.0) -> None:
        """:meth:`check` (the :class:`Limiter` interface)."""
        self.check(key, cost)

    def check(self, key: Hashable, cost: float = 1.0, now: float | None = None) -> None:
        """Take ``cost`` tokens for ``key`` or raise :class:`RateLimited` with a retry delay.

        ``now``: the clock's ``monotonic()`` if the caller read it already (a WebSocket frame
        is charged to several buckets at one instant: one clock read for all of them)."""
        if now is None:
            now = self.clock.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [self.capacity, now]
        tokens = bucket[0] + (now - bucket[1]) * self.rate
        if tokens > self.capacity:
            tokens = self.capacity
        bucket[1] = now
        if tokens < cost:
            bucket[0] = tokens
            raise RateLimited(
                f"too many {self.what}; slow down", retry_after=(cost - tokens) / self.rate
            )
        bucket[0] = tokens - cost
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


#: KEYS[1] = bucket; ARGV = capacity, rate (tokens/s), cost. Returns {1, "0"} when the tokens
#: were taken, else {0, "<seconds until enough tokens>"} (strings: Redis truncates numbers).
_BUCKET_SCRIPT = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local stored = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(stored[1])
local ts = tonumber(stored[2])
if tokens == nil or ts == nil then
  tokens = capacity
  ts = now
end
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
local allowed = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate * 1000) + 1000)
if allowed == 1 then
  return {1, '0'}
end
return {0, tostring((cost - tokens) / rate)}
"""


class SharedRateLimiter:
    """A token bucket per key, held in Redis and shared by every relay process.

    ``fallback`` (the process's in-memory limiter with the same capacity and rate) answers
    when Redis cannot: the relay keeps serving, limited per process.
    """

    def __init__(
        self,
        redis: Any,
        *,
        prefix: str,
        name: str,
        fallback: RateLimiter,
        timeout: float = 1.0,
    ) -> None:
        self.what = fallback.what
        self.capacity = fallback.capacity
        self.rate = fallback.rate
        self.fallback = fallback
        self.timeout = timeout
        self._key_prefix = f"{prefix}rl:{name}:"
        self._script = redis.register_script(_BUCKET_SCRIPT)
        self._warned_at: float | None = None

    async def acquire(self, key: Hashable, cost: float = 1.0) -> None:
        """Take ``cost`` tokens from the shared bucket of ``key`` or raise RateLimited."""
        try:
            async with asyncio.timeout(self.timeout):
                allowed, wait = await self._script(
                    keys=[f"{self._key_prefix}{key}"], args=[self.capacity, self.rate, cost]
                )
        except Exception as exc:  # Redis down or slow: degrade to the per-process limit
            self._warn(exc)
            self.fallback.check(key, cost)
            return
        if int(allowed) != 1:
            raise RateLimited(f"too many {self.what}; slow down", retry_after=float(wait))

    def _warn(self, exc: BaseException) -> None:
        now = self.fallback.clock.monotonic()
        if self._warned_at is None or now - self._warned_at >= 60:
            self._warned_at = now
            log_event(
                "rate_limit_redis_unavailable",
                logging.WARNING,
                limiter=self._key_prefix,
                error=exc.__class__.__name__,
            )
