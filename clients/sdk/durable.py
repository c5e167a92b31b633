"""Group commit for the store's fsync: ``await flush(store)`` returns once every transaction
committed before the call is on disk (:meth:`~clients.store.base.Store.flush`, in a thread of
the store's own, so the event loop keeps running). Callers that come while an fsync is running
share the next one — one more fsync for all of them, not one each: the receive path (before an
ack) and the send path (before a ciphertext leaves) of one client often flush at the same time.
A caller whose commits are all durable already (:meth:`~clients.store.base.Store.synced`)
returns at once: no round trip to the thread, no wait behind a running fsync.

The thread (one per store, started by its first flush, ended when the store is collected)
waits on a queue and answers through ``call_soon_threadsafe``: no executor future to wrap and
chain, and fewer GIL hand-offs per fsync than ``run_in_executor`` (measured: ~22 µs of CPU per
round trip instead of ~37, see docs/client-store.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import weakref

from clients.store.base import Store

__all__ = ["flush"]


#: One fsync for the store's thread: the store, the loop to answer on, the future to settle.
_Job = tuple[Store, asyncio.AbstractEventLoop, "asyncio.Future[None]"]


class _Flusher:
    """The fsync in progress for one store, and the one queued behind it. It does not hold
    the store (only a running fsync does): the store is the key of its entry in
    ``_flushers``, which a value holding it would keep alive forever. Nor does its thread,
    which holds only the job queue and ends when the flusher is collected."""

    def __init__(self) -> None:
        self.running: asyncio.Future[None] | None = None
        self.queued: asyncio.Future[None] | None = None
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

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
        if self._thread is None:
            self._thread = threading.Thread(
                target=_serve, args=(self._jobs,), name="vox-fsync", daemon=True
            )
            self._thread.start()
            weakref.finalize(self, self._jobs.put, None)  # ends the thread
        running: asyncio.Future[None] = loop.create_future()
        self._jobs.put((store, loop, running))
        running.add_done_callback(_retrieve)
        running.add_done_callback(lambda _: self._done(loop, store))
        return running

    def _done(self, loop: asyncio.AbstractEventLoop, store: Store) -> None:
        self.running, queued, self.queued = None, self.queued, None
        if queued is None:
            return
        self.running = self._start(loop, store)
        self.running.add_done_callback(lambda done: _settle(queued, done))


def _serve(jobs: queue.SimpleQueue[_Job | None]) -> None:
    """A store's fsync thread: runs each job's ``store.flush()`` and settles its future on
    its loop; ends at ``None``."""
    while True:
        job = jobs.get()
        if job is None:
            return
        store, loop, future = job
        error: BaseException | None = None
        try:
            store.flush()
        except BaseException as exc:  # handed to the awaiting callers
            error = exc
        del job, store  # not kept alive while waiting for the next job
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(_set, future, error)
        del loop, future, error


def _set(future: asyncio.Future[None], error: BaseException | None) -> None:
    """Settle a job's future on its loop (unless every caller gave up on it)."""
    if not future.cancelled():
        future.set_result(None) if error is None else future.set_exception(error)


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
    if store.synced():  # an fsync that started after them completed: no thread round trip
        return
    flusher = _flushers.get(store)
    if flusher is None:
        flusher = _flushers[store] = _Flusher()
    await asyncio.shield(flusher.waiter(store))  # a cancelled caller does not cancel the others'
