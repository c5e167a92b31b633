"""Engine and session factory for SQLite (aiosqlite) and PostgreSQL (asyncpg).

SQLite connections get ``journal_mode=WAL``, ``synchronous=NORMAL``, ``foreign_keys=ON`` and
a ``busy_timeout``; SQLAlchemy (not the driver) emits ``BEGIN``, so a transaction that must
hold SQLite's write lock from its first statement can ask for ``BEGIN IMMEDIATE``::

    async with sessions() as session:
        await write_lock(session)   # BEGIN IMMEDIATE on SQLite, a no-op on PostgreSQL
        ...
        await session.commit()

Code on an ``AsyncConnection`` (SQLAlchemy Core) uses :func:`write_transaction` instead of
``engine.begin()`` for a transaction that reads before it writes::

    async with write_transaction(engine) as conn:   # BEGIN IMMEDIATE on SQLite
        ids = (await conn.execute(select(...))).scalars().all()
        await conn.execute(delete(...).where(...))

A transaction whose first statement writes (``INSERT``, ``DELETE ... WHERE x IN (SELECT
...)``) is safe with a plain ``BEGIN``: SQLite takes the write lock at that statement and
waits for it (``busy_timeout``). One that *reads first* and writes later cannot wait: when
another connection committed in between, its snapshot is stale and the write fails at once
with "database is locked".

On PostgreSQL :func:`write_lock` and :func:`write_transaction`'s lock do nothing: row locks
(``FOR UPDATE SKIP LOCKED``) do the job there.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

__all__ = [
    "IMMEDIATE",
    "configure_sqlite",
    "create_engine",
    "is_sqlite",
    "session_factory",
    "sqlite_sync_engine",
    "write_lock",
    "write_transaction",
]

log = logging.getLogger("vox.db")

#: Execution option that makes the next ``BEGIN`` on SQLite a ``BEGIN IMMEDIATE``.
IMMEDIATE = "vox_sqlite_immediate"


def is_sqlite(engine: AsyncEngine) -> bool:
    """True when ``engine`` talks to SQLite."""
    return engine.dialect.name == "sqlite"


def create_engine(url: str, *, echo: bool = False, pool_size: int = 10) -> AsyncEngine:
    """The relay's async engine for ``url`` (``sqlite+aiosqlite`` / ``postgresql+asyncpg``)."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, echo=echo, connect_args={"timeout": 30})
        _configure_sqlite(engine)
        return engine
    engine = create_async_engine(
        url, echo=echo, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
    )
    _configure_postgres(engine)
    return engine


def _configure_postgres(engine: AsyncEngine) -> None:
    """Each new PostgreSQL connection gets the session's own functions (``pg_temp``; outside
    any transaction, so nothing rolls them back): the delivery writer's batch reads with the
    queue locks and counts, and its queue lock-and-count
    (:data:`server.delivery.repository.SESSION_FUNCTIONS_PG`). Without them (a role with no
    ``TEMP`` privilege on the database) the writer takes two more round trips per batch."""
    from server.delivery.repository import SESSION_FUNCTIONS, SESSION_FUNCTIONS_PG

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        try:
            dbapi_connection.run_async(lambda raw: raw.execute(SESSION_FUNCTIONS_PG))
        except Exception as exc:  # e.g. no TEMP privilege (never log the statement)
            log.warning(
                "no session function on a PostgreSQL connection (%s): queue locks and "
                "counts take two round trips",
                exc.__class__.__name__,
            )
            return
        record.info[SESSION_FUNCTIONS] = True


def _configure_sqlite(engine: AsyncEngine) -> None:
    configure_sqlite(engine.sync_engine)


def configure_sqlite(sync_engine: Engine) -> None:
    """The relay's SQLite connection set-up, for every engine on the database file (the async
    one here, the group-commit writer's synchronous one): WAL, ``synchronous=NORMAL``,
    foreign keys, a busy timeout, and ``BEGIN`` / ``BEGIN IMMEDIATE`` emitted by SQLAlchemy."""

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (the driver's implicit BEGIN is disabled).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Through the driver's cursor: SQLAlchemy's execution path cost several times the
        # BEGIN itself (a login's transaction is a few microsecond statements).
        immediate = conn.get_execution_options().get(IMMEDIATE)
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
        finally:
            cursor.close()


def sqlite_sync_engine(engine: AsyncEngine) -> Engine:
    """A synchronous engine on the same SQLite file, with the relay's connection set-up, for
    work that runs a whole transaction in one thread (the group-commit writer,
    :class:`server.db.onehop.OneHop`)."""
    from sqlalchemy import create_engine as create_sync_engine

    url = engine.url.set(drivername="sqlite")
    sync = create_sync_engine(
        url, connect_args={"timeout": 30, "check_same_thread": False}, hide_parameters=True
    )
    configure_sqlite(sync)
    return sync


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """The session factory stored as ``RelayState.sessions``."""
    return async_sessionmaker(engine, expire_on_commit=False)


async def write_lock(session: AsyncSession) -> None:
    """Start the session's transaction holding SQLite's write lock (no-op on PostgreSQL).

    Must be the first thing done with the session (before any other statement).
    """
    bind = session.bind
    if bind is not None and bind.dialect.name == "sqlite":
        if session.in_transaction():
            # A read-then-write transaction on SQLite fails with "database is locked"
            # under concurrency instead of waiting: the lock must come first.
            raise RuntimeError("write_lock() must be the first statement of a transaction")
        await session.connection(execution_options={IMMEDIATE: True})


@asynccontextmanager
async def write_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """Like ``engine.begin()``, but holding SQLite's write lock from ``BEGIN`` (``BEGIN
    IMMEDIATE``); commits on success, rolls back on error. A plain transaction on PostgreSQL.
    """
    async with engine.connect() as conn:
        if is_sqlite(engine):
            conn = await conn.execution_options(**{IMMEDIATE: True})
        async with conn.begin():
            yield conn
