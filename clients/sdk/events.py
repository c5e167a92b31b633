"""Event fan-out of the shell: async iterators and callbacks, in emission order."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from clients.sdk.models import Event

__all__ = ["EventHub"]

log = logging.getLogger("vox.client")


class EventHub:
    """Subscribers (:meth:`messages`) and callbacks (:meth:`on_event`) of one client."""

    def __init__(self) -> None:
        self._subscribers: list[asyncio.Queue[Event]] = []
        self._callbacks: list[Callable[[Event], Any]] = []

    def on_event(self, callback: Callable[[Event], Any]) -> Callable[[], None]:
        """Call ``callback(event)`` (may return an awaitable) for every event; returns an
        unsubscribe function."""
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback)

    async def messages(self) -> AsyncIterator[Event]:
        """Every event from now on: messages, receipts, typing, ..."""
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self._subscribers.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.remove(queue)

    async def emit(self, events: Iterable[Event]) -> None:
        """Hand ``events`` to every subscriber and callback (a failing callback is logged and
        never stops the receive loop)."""
        for event in events:
            for queue in list(self._subscribers):
                queue.put_nowait(event)
            for callback in list(self._callbacks):
                try:
                    result = callback(event)
                    if asyncio.iscoroutine(result):
                        await result
                except Exception:
                    log.exception("event callback failed")
