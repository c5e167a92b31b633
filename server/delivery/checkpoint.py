"""WAL checkpoints of the relay's SQLite database, off the group-commit writer's commits.

SQLite's automatic checkpoint runs inside ``COMMIT`` once the WAL holds ``wal_autocheckpoint``
pages (1,000 by default): the committing connection copies the WAL into the database file and
fsyncs both. On the relay that connection is the group-commit writer's, so every few batches
one commit took the checkpoint's fsyncs, and every send in flight (the batch and the ones
queued behind it) waited for them: the tail of the send→deliver latency.

:class:`WalCheckpointer` runs ``PRAGMA wal_checkpoint(PASSIVE)`` on its own connection in its
own thread instead, every :data:`CHECKPOINT_COMMITS` of the writer's commits and after
:data:`IDLE_SECONDS` without any. A passive checkpoint takes no lock a writer waits for, so
the writer keeps committing meanwhile; its next transaction after a complete checkpoint starts
the WAL over. Durability is unchanged: a commit is as durable as before when the writer
answers (WAL, ``synchronous=NORMAL``); the checkpoint only moves committed pages into the
database file, with the same fsyncs as before (WAL before, database file after). The writer's
connection keeps SQLite's automatic checkpoint as a backstop at :data:`BACKSTOP_PAGES`: if
this thread fails or cannot catch up, the WAL still cannot grow without bound.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading

__all__ = ["BACKSTOP_PAGES", "CHECKPOINT_COMMITS", "IDLE_SECONDS", "WalCheckpointer"]

log = logging.getLogger("vox.delivery")

#: The writer's commits between two checkpoints (a batch of ~80 sends writes ~60 pages:
#: about SQLite's default of 1,000 pages, checkpointed about as often as before).
CHECKPOINT_COMMITS = 16
#: Seconds without a commit after which what is left in the WAL is checkpointed.
IDLE_SECONDS = 1.0
#: Passive checkpoints in a row at most, while commits made during one left frames behind.
CATCH_UP_ROUNDS = 4
#: ``wal_autocheckpoint`` of the writer's connection: SQLite checkpoints inside a commit only
#: once the WAL holds this many pages (40 MiB of 4 KiB pages), i.e. only if this one fails.
BACKSTOP_PAGES = 10_000


class WalCheckpointer:
    """A thread that checkpoints the WAL of the SQLite database at ``path``."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._wake = threading.Event()
        self._conn: sqlite3.Connection | None = None
        self._closing = False
        self._commits = 0  # the writer's commits so far (written by its thread only)
        self._poked_at = 0  # _commits at the last wake-up
        self._done_at = 0  # _commits at the start of the last checkpoint
        #: Checkpoints run and failed (tests, diagnostics).
        self.runs = 0
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name="vox-checkpoint", daemon=True)
        self._thread.start()

    def committed(self) -> None:
        """The writer committed a transaction (called in the writer's thread)."""
        self._commits += 1
        if self._commits - self._poked_at >= CHECKPOINT_COMMITS:
            self._poked_at = self._commits
            self._wake.set()

    def checkpoint(self) -> tuple[int, int, int]:
        """One passive checkpoint now (in this thread): SQLite's (busy, WAL frames, frames
        checkpointed); raises :class:`sqlite3.Error`."""
        if self._conn is None:
            # Default synchronous (FULL): the checkpoint fsyncs the WAL before copying it and
            # the database file before the WAL may be reused, as the writer's did.
            self._conn = sqlite3.connect(
                self._path, isolation_level=None, check_same_thread=False, timeout=0
            )
        self.runs += 1
        busy, frames, done = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(busy), int(frames), int(done)

    def _run(self) -> None:
        try:
            while True:
                pending = self._commits != self._done_at
                self._wake.wait(IDLE_SECONDS if pending else None)
                self._wake.clear()
                if self._closing:
                    return
                commits = self._commits
                if commits == self._done_at:
                    continue
                self._done_at = commits
                try:
                    for _ in range(CATCH_UP_ROUNDS):  # each round copies what the last left
                        _, frames, done = self.checkpoint()
                        if done >= frames or self._closing:
                            break  # complete: the writer's next transaction starts it over
                except sqlite3.Error as exc:  # the backstop (wal_autocheckpoint) bounds the WAL
                    self.failures += 1
                    log.warning("WAL checkpoint failed: %s", exc.__class__.__name__)
        finally:
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
                self._conn = None

    def close(self) -> None:
        """Stop the thread (after a checkpoint in progress) and close its connection."""
        self._closing = True
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
