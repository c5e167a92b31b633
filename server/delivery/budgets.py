"""What a device, an account and an address may spend on ``/v1/ws``, charged before any work.

Every budget is a token bucket keyed by device pk, account id or client address — never by
connection — so reconnecting does not refill it. Buckets live in the relay process
(:class:`~server.ratelimit.RateLimiter`), or, when Redis is configured, in Redis and shared by
every node (:class:`~server.ratelimit.SharedRateLimiter`); a node then draws tokens in
*leases* (a tenth of the bucket) and spends them locally, so most frames need no round trip
and a device that hops between nodes gets at most one lease per node more than its budget.

=========================  ==================================  ===========================
budget                     key / charged                       over it
=========================  ==================================  ===========================
``frames``                 device; every frame, before parsing  close 4429
``frame_bytes``            device; UTF-8 bytes of every frame   close 4429
``invalid``                device; each refused frame           close 4400
``sends``                  device; each ``send``                close 4429
``account_sends``          account; each ``send``               close 4429
``connects_by_address``    client address; each upgrade         close 4429
``connects_by_device``     device; each authenticated connect   close 4429
=========================  ==================================  ===========================
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from server.clock import Clock
from server.errors import RateLimited
from server.ratelimit import RateLimiter, SharedRateLimiter
from server.settings import LimitSettings

__all__ = ["Budget", "DeviceBudgets"]


class Budget:
    """One kind of budget: a local bucket per key, or leases from a shared one."""

    __slots__ = ("_leases", "lease", "local", "shared")

    def __init__(self, local: RateLimiter, shared: SharedRateLimiter | None = None) -> None:
        self.local = local
        self.shared = shared
        self.lease = max(1.0, local.capacity / 10)
        self._leases: dict[Hashable, float] = {}

    def take(self, key: Hashable, cost: float = 1.0, now: float | None = None) -> bool:
        """Spend ``cost`` without waiting: True if done, False if :meth:`spend` must run
        first (shared buckets only). Raises :class:`RateLimited` when over budget. ``now``:
        the clock's ``monotonic()``, if the caller read it already."""
        if self.shared is None:
            self.local.check(key, cost, now)
            return True
        have = self._leases.get(key, 0.0)
        if have < cost:
            return False
        self._leases[key] = have - cost
        return True

    async def spend(self, key: Hashable, cost: float = 1.0) -> None:
        """Spend ``cost`` (one round trip to Redis when the local lease is used up)."""
        if self.take(key, cost):
            return
        assert self.shared is not None
        want = max(self.lease, cost)
        try:
            await self.shared.acquire(key, want)
        except RateLimited:
            # Nearly empty: a whole lease is not there, but this one charge may be.
            await self.shared.acquire(key, cost)
            return
        self._leases[key] = self._leases.get(key, 0.0) + want - cost

    def forget(self, key: Hashable) -> None:
        """Drop the unspent lease of ``key`` (its tokens are lost, never refunded)."""
        self._leases.pop(key, None)


class DeviceBudgets:
    """The WebSocket budgets of one relay node (see the module docstring)."""

    def __init__(
        self, limits: LimitSettings, clock: Clock, redis: Any = None, prefix: str = "vox:"
    ) -> None:
        def bucket(name: str, capacity: float, per_seconds: float, what: str) -> Budget:
            local = RateLimiter(capacity=capacity, per_seconds=per_seconds, what=what, clock=clock)
            if redis is None:
                return Budget(local)
            shared = SharedRateLimiter(redis, prefix=prefix, name=name, fallback=local)
            return Budget(local, shared)

        frames = limits.frames_per_second_per_device
        byte_rate = limits.frame_bytes_per_second_per_device
        byte_burst = max(2 * byte_rate, limits.max_frame_bytes)
        sends = limits.messages_per_second_per_device
        account = limits.messages_per_second_per_account
        self.frames = bucket("ws_frames", 2 * frames, 2.0, "frames")
        self.frame_bytes = bucket("ws_bytes", byte_burst, byte_burst / byte_rate, "frame bytes")
        self.invalid = bucket(
            "ws_invalid", limits.invalid_frames_per_minute_per_device, 60.0, "invalid frames"
        )
        send_burst = max(2 * sends, 20.0)
        account_burst = max(2 * account, 20.0)
        self.sends = bucket("ws_sends", send_burst, send_burst / sends, "sends")
        self.account_sends = bucket(
            "ws_account_sends", account_burst, account_burst / account, "sends"
        )
        self.connects_by_address = bucket(
            "ws_connect_addr", limits.ws_connects_per_minute_per_address, 60.0, "connects"
        )
        self.connects_by_device = bucket(
            "ws_connect_dev", limits.ws_connects_per_minute_per_device, 60.0, "connects"
        )

    def forget(self, device_pk: int, account_id: int) -> None:
        """A connection ended: drop its leases (bounded memory; nothing is refunded)."""
        for budget in (self.frames, self.frame_bytes, self.invalid, self.sends):
            budget.forget(device_pk)
        self.account_sends.forget(account_id)
