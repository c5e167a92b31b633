"""One transaction, one hand-off: run a synchronous function in a database transaction.

With aiosqlite every statement, fetch and commit of an async connection is a separate hand-off
to the driver's thread and back to the event loop (two thread switches each, and the GIL
changing hands). :class:`OneHop` runs a whole short transaction — a plain function of a
synchronous SQLAlchemy ``Connection`` — in one go:

* SQLite: in its own thread, on a synchronous engine on the same file (the relay's connection
  set-up, :func:`server.db.engine.configure_sqlite`), inside ``BEGIN IMMEDIATE`` (the write
  lock from the first statement: the function may read, then write);
* PostgreSQL: through ``AsyncConnection.run_sync`` in a plain transaction (asyncpg round trips
  stay; the ORM session does not).

The function commits when it returns and rolls back when it raises; a refusal that must still
commit (a login challenge is consumed even by a failed attempt) is returned, not raised::

    hop = OneHop(engine)
    result = await hop.write(lambda conn: conn.execute(text("...")).all())
    await hop.close()
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from server.db.engine import IMMEDIATE, sqlite_sync_engine

__all__ = ["OneHop"]

T = TypeVar("T")


class OneHop:
    """Short write transactions in one hand-off each (see the module docstring)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sync: Engine | None = None
        self._conn: Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        if engine.dialect.name == "sqlite":
            self._sync = sqlite_sync_engine(engine)
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vox-onehop")

    async def write(self, fn: Callable[[Connection], T]) -> T:
        """``fn(conn)`` in one transaction that may read, then write; commits on return."""
        if self._thread is not None:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._thread, self._sqlite, fn)
        async with self._engine.connect() as conn, conn.begin():
            return await conn.run_sync(fn)

    def _sqlite(self, fn: Callable[[Connection], T]) -> T:
        assert self._sync is not None
        conn = self._conn
        if conn is None:  # kept by the one thread (no pool checkout per transaction)
            conn = self._sync.connect().execution_options(**{IMMEDIATE: True})
            self._conn = conn
        try:
            with conn.begin():
                return fn(conn)
        except BaseException:
            self._close_conn()
            raise

    def _close_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    async def close(self) -> None:
        """Close the thread's connection and the synchronous engine."""
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._close_conn)
            self._thread.shutdown(wait=True)
            self._thread = None
        if self._sync is not None:
            self._sync.dispose()
            self._sync = None
