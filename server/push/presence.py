"""Which devices hold a live WebSocket, on this node or any other, and push coalescing.

The delivery hub tells :class:`Presence` when a device's connection arrives on or leaves this
node. Without Redis that is the whole truth (one node). With Redis, every node also keeps a
key ``<prefix>push:online:<device pk>`` = its node id for each device connected to it (expiring
after ``ttl`` seconds, refreshed every ``ttl / 3``, removed when the device leaves), so any node
can tell whether a device is connected somewhere. A node that dies leaves its keys for at most
``ttl`` seconds, during which its devices are taken as connected (no push).

:class:`Coalescer` allows one push per device per window: ``SET <prefix>push:sent:<pk> NX EX``
with Redis (shared by every node), an in-process table without it. When Redis fails, both fall
back to this node's own knowledge (devices may get a push while connected elsewhere, or one
push per node per window) and log a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from server.clock import Clock
from server.logs import log_event

__all__ = ["Coalescer", "Presence"]

# Delete the key only if this node still owns it (another node may hold a newer connection).
_DELETE_IF_OWNER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Presence:
    """Connected devices: this node's set plus, with Redis, every node's keys."""

    def __init__(self, redis: Any, prefix: str, node_id: str, ttl: int = 90) -> None:
        self._redis = redis
        self._prefix = f"{prefix}push:online:"
        self._node = node_id
        self._ttl = ttl
        self._local: set[int] = set()
        self._ops: asyncio.Queue[tuple[bool, int]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    def _key(self, device_pk: int) -> str:
        return f"{self._prefix}{device_pk}"

    def attached(self, device_pk: int) -> None:
        """A connection of the device is now registered on this node."""
        self._local.add(device_pk)
        if self._redis is not None:
            self._ops.put_nowait((True, device_pk))

    def detached(self, device_pk: int) -> None:
        """The device has no connection on this node any more."""
        self._local.discard(device_pk)
        if self._redis is not None:
            self._ops.put_nowait((False, device_pk))

    async def start(self) -> None:
        """Start the Redis writer and refresher (nothing to do without Redis)."""
        if self._redis is not None:
            self._tasks = [
                asyncio.create_task(self._writer(), name="vox-push-presence"),
                asyncio.create_task(self._refresher(), name="vox-push-presence-refresh"),
            ]

    async def stop(self) -> None:
        """Stop the tasks and forget this node's devices in Redis (they are going away)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._redis is not None and self._local:
            with contextlib.suppress(Exception):
                for pk in list(self._local):
                    await self._redis.eval(_DELETE_IF_OWNER, 1, self._key(pk), self._node)

    async def settled(self) -> None:
        """Every attach/detach seen so far has been written to Redis (tests)."""
        await self._ops.join()

    async def connected(self, device_pks: Iterable[int]) -> set[int]:
        """The subset of ``device_pks`` with a live connection on any node."""
        pks = list(device_pks)
        online = {pk for pk in pks if pk in self._local}
        rest = [pk for pk in pks if pk not in online]
        if self._redis is None or not rest:
            return online
        try:
            values = await self._redis.mget([self._key(pk) for pk in rest])
        except Exception as exc:
            log_event("push_presence_failed", logging.WARNING, error=exc.__class__.__name__)
            return online
        # This node's own keys are stale for devices no longer in its set (their deletion may
        # still be queued): only other nodes' keys count.
        node = self._node.encode()
        return online | {
            pk for pk, value in zip(rest, values, strict=True) if value not in (None, node)
        }

    async def _writer(self) -> None:
        while True:
            online, pk = await self._ops.get()
            try:
                if online:
                    await self._redis.set(self._key(pk), self._node, ex=self._ttl)
                else:
                    await self._redis.eval(_DELETE_IF_OWNER, 1, self._key(pk), self._node)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log_event("push_presence_failed", logging.WARNING, error=exc.__class__.__name__)
            finally:
                self._ops.task_done()

    async def _refresher(self) -> None:
        while True:
            await asyncio.sleep(self._ttl / 3)
            pks = list(self._local)
            if not pks:
                continue
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for pk in pks:
                        pipe.set(self._key(pk), self._node, ex=self._ttl)
                    await pipe.execute()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log_event("push_presence_failed", logging.WARNING, error=exc.__class__.__name__)


class Coalescer:
    """At most one push per device per ``window`` seconds (across nodes with Redis)."""

    def __init__(self, redis: Any, prefix: str, window: int, clock: Clock) -> None:
        self._redis = redis
        self._clock = clock
        self._prefix = f"{prefix}push:sent:"
        self._window = window
        self._local: dict[int, float] = {}

    async def claim(self, device_pk: int) -> bool:
        """True if a push may go to the device now (and starts its quiet window)."""
        if self._redis is not None:
            try:
                return bool(
                    await self._redis.set(f"{self._prefix}{device_pk}", 1, nx=True, ex=self._window)
                )
            except Exception as exc:
                log_event("push_coalesce_failed", logging.WARNING, error=exc.__class__.__name__)
        now = self._clock.monotonic()
        if len(self._local) > 100_000:
            self._local = {pk: t for pk, t in self._local.items() if t > now}
        until = self._local.get(device_pk)
        if until is not None and until > now:
            return False
        self._local[device_pk] = now + self._window
        return True
