"""Group commit for the store's fsync: ``await flush(store)`` returns once every transaction
committed before the call is on disk (:meth:`~clients.store.base.Store.flush`, in a worker
thread, so the event loop keeps running). Callers that come while an fsync is running share
the next one — one more fsync for all of them, not one each: the receive path (before an ack)
and the send path (before a ciphertext leaves) of one client often flush at the same time.
"""

from __future__ import annotations

import asyncio
import weakref

from clients.store.base import Store

__all__ = ["flush"]


class _Flusher:
    """The fsync in progress for one store, and the one queued behind it. It does not hold
    the store (only a running fsync does): the store is the key of its entry in
    ``_flushers``, which a value holding it would keep alive forever."""

    def __init__(self) -> None:
        self.running: asyncio.Future[None] | None = None
        self.queued: asyncio.Future[None] | None = None

    def waiter(self, store: Store) -> asyncio.Future[None]:
        # A caller's commits may be later than the running fsync's start: it waits for the
        # next one (started as soon as the running one ends), shared with everyone queued.
        loop = asyncio.get_running_loop()
        if self.running is None:
            self.running = self._start(loop, store)
            return self.running
        if self.queued is None:
            self.queued = loop.create_future()
            self.queued.add_done_callback(_retrieve)
        return self.queued

    def _start(self, loop: asyncio.AbstractEventLoop, store: Store) -> asyncio.Future[None]:
        running = loop.run_in_executor(None, store.flush)
        running.add_done_callback(_retrieve)
        running.add_done_callback(lambda _: self._done(loop, store))
        return running

    def _done(self, loop: asyncio.AbstractEventLoop, store: Store) -> None:
        self.running, queued, self.queued = None, self.queued, None
        if queued is None:
            return
        self.running = self._start(loop, store)
        self.running.add_done_callback(lambda done: _settle(queued, done))


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark an error as seen (each caller awaiting the future still gets it)."""
    if not future.cancelled():
        future.exception()


def _settle(target: asyncio.Future[None], done: asyncio.Future[None]) -> None:
    if target.done():
        return
    error = None if done.cancelled() else done.exception()
    if done.cancelled():
        target.cancel()
    elif error is not None:
        target.set_exception(error)
    else:
        target.set_result(None)


_flushers: weakref.WeakKeyDictionary[Store, _Flusher] = weakref.WeakKeyDictionary()


async def flush(store: Store) -> None:
    """Every transaction committed on ``store`` before this call is durable when it returns."""
    flusher = _flushers.get(store)
    if flusher is None:
        flusher = _flushers[store] = _Flusher()
    await asyncio.shield(flusher.waiter(store))  # a cancelled caller does not cancel the others'
