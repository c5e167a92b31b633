"""WAL checkpoints off the committing thread (see docs/client-store.md, *Checkpoints*).

SQLite's automatic checkpoint runs inside ``COMMIT`` once the WAL holds ``wal_autocheckpoint``
pages: it copies the WAL into the database file and fsyncs both — on the event loop, since the
SDK commits there. :class:`Checkpointer` instead runs ``PRAGMA wal_checkpoint(PASSIVE)`` on its
own connection in its own thread, after every :data:`CHECKPOINT_COMMITS` commits and after
:data:`IDLE_SECONDS` without commits. A passive checkpoint takes no lock a writer waits for, so
the store's commits go on meanwhile; the next write after a complete one starts the WAL over.
The store keeps SQLite's automatic checkpoint as a backstop at :data:`BACKSTOP_PAGES` (a
multiple of the worker's usual size): if the worker's checkpoints fail or cannot catch up, the
WAL still cannot grow without bound.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path

__all__ = [
    "BACKSTOP_PAGES",
    "CATCH_UP_ROUNDS",
    "CHECKPOINT_COMMITS",
    "IDLE_SECONDS",
    "Checkpointer",
]

#: Changing commits between two worker checkpoints. A burst's commit wrote 10–20 pages into a
#: fresh store and ~50 (4 KiB) into one of 600 messages (~73 at 2,000, measured with
#: bench/e2e.py's load), ~70 % of them the search index's random keys; since those go to an
#: append-only table first (sqlite.py, ``search_pending``), a burst of three received messages
#: writes 14 pages instead of 24 at 600 messages, 16 instead of 26 at 2,000 (measured
#: in-process, WAL frame writes counted with strace). 64 commits are about SQLite's default of
#: 1,000 pages; the large bursts of a large store can exceed the backstop below.
CHECKPOINT_COMMITS = 64
#: Seconds without a commit after which the worker checkpoints what is left.
IDLE_SECONDS = 1.0
#: Passive checkpoints in a row at most, while commits made during one left frames behind (the
#: WAL starts over only at a write that finds every frame checkpointed).
CATCH_UP_ROUNDS = 4
#: ``wal_autocheckpoint`` of the store's connection: SQLite checkpoints inside a commit only
#: once the WAL holds this many pages (16 MiB of 4 KiB pages), i.e. only if the worker fails.
BACKSTOP_PAGES = 4000


class Checkpointer:
    """A thread that checkpoints the WAL of the database ``path`` on its own connection."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._wake = threading.Event()
        self._lock = threading.Lock()  # the connection: the thread's and checkpoint()'s calls
        self._conn: sqlite3.Connection | None = None
        self._closing = False
        self._commits = 0  # changing commits so far (written by the store's thread only)
        self._poked_at = 0  # _commits at the last poke
        self._done_at = 0  # _commits at the start of the last checkpoint
        #: Checkpoints run and failed (sqlite3 errors) by this checkpointer.
        self.runs = 0
        self.failures = 0
        self._thread = threading.Thread(
            target=self._run, name=f"vox-checkpoint {path}", daemon=True
        )
        self._thread.start()

    def committed(self) -> None:
        """A transaction changed something (called by the store after its ``COMMIT``)."""
        self._commits += 1
        if self._commits - self._poked_at >= CHECKPOINT_COMMITS:
            self._poked_at = self._commits
            self._wake.set()

    def checkpoint(self) -> tuple[int, int, int]:
        """A passive checkpoint now, in the calling thread (not the event loop's): SQLite's
        (busy, WAL frames, frames checkpointed); raises :class:`sqlite3.Error`."""
        with self._lock:
            if self._conn is None:
                if self._closing:
                    raise sqlite3.ProgrammingError("the store is closed")
                # Default synchronous (FULL): a checkpoint fsyncs the WAL before copying it
                # and the database file before the WAL may be reused, as the store's would.
                self._conn = sqlite3.connect(
                    self._path, isolation_level=None, check_same_thread=False, timeout=0
                )
            self.runs += 1
            busy, log, done = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            return int(busy), int(log), int(done)

    def _run(self) -> None:
        seen = -1
        while True:
            pending = self._commits != self._done_at
            poked = self._wake.wait(IDLE_SECONDS if pending else None)
            self._wake.clear()
            if self._closing:
                return
            commits = self._commits
            if commits == self._done_at:
                continue
            if not poked and commits != seen:  # still busy: wait for a quiet interval
                seen = commits
                continue
            seen = self._done_at = commits
            try:
                last = -1
                for _ in range(CATCH_UP_ROUNDS):  # each round copies what the last one left
                    _, log, done = self.checkpoint()
                    if (log == last and done >= log) or self._closing:
                        break  # nothing committed during the last round
                    last = log
            except sqlite3.Error:  # the backstop (wal_autocheckpoint) bounds the WAL
                self.failures += 1

    def close(self) -> None:
        """Stop the thread and close its connection (idempotent)."""
        self._closing = True
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
                self._conn = None
