"""Core background upkeep: forget expired challenges and tokens; the login runner.

:func:`core_lifespan` is the core layer's lifespan hook (see ``server.app``); it runs
:func:`sweep_expired` every ``RelayState.auth_sweep_interval`` seconds until shutdown. Several
relay processes may sweep the same database: the deletes are idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.auth import repository as auth_repo
from server.clock import Clock
from server.db.engine import write_lock
from server.db.onehop import OneHop
from server.logs import log_event
from server.state import relay_state

__all__ = ["core_lifespan", "sweep_expired"]


async def sweep_expired(sessions: async_sessionmaker[AsyncSession], now: int) -> tuple[int, int]:
    """Delete challenges and tokens expired at ``now``; return ``(challenges, tokens)``."""
    async with sessions() as session:
        await write_lock(session)
        counts = await auth_repo.delete_expired(session, now)
        await session.commit()
    return counts


async def _loop(sessions: async_sessionmaker[AsyncSession], clock: Clock, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            challenges, tokens = await sweep_expired(sessions, clock.now())
            if challenges or tokens:
                log_event("auth_swept", challenges=challenges, tokens=tokens)
        except Exception as exc:  # keep sweeping; the next round may succeed
            log_event("auth_sweep_failed", logging.WARNING, error=exc.__class__.__name__)


@asynccontextmanager
async def core_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the login transactions' runner (``RelayState.login_db``) and run the expiry
    sweeper for the app's lifetime."""
    state = relay_state(app)
    state.login_db = OneHop(state.engine)
    task = asyncio.create_task(
        _loop(state.sessions, state.clock, state.auth_sweep_interval), name="vox-auth-sweeper"
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await state.login_db.close()
