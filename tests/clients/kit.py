"""Small helpers shared by the client tests (polling, event filters, relay queue counts)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from sqlalchemy import func, select

from clients.sdk import Event, Message
from server.db.models import Account, Device
from server.db.models_delivery import QueueEntry
from tests.server.relay_harness import Relay


async def wait_for(predicate: Callable[[], bool], within: float = 20.0) -> None:
    """Poll ``predicate()`` until true (the relay and clients run in this event loop)."""
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def wait_for_value(
    probe: Callable[[], Awaitable[object]], expected: object, within: float = 10.0
) -> None:
    """Poll the coroutine function ``probe`` until it returns ``expected``."""
    deadline = asyncio.get_running_loop().time() + within
    while (got := await probe()) != expected:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"expected {expected!r}, still {got!r}")
        await asyncio.sleep(0.05)


def texts(events: list[Event], sender: str) -> list[str]:
    """Texts of the messages from ``sender`` in ``events``, in order."""
    return [e.text or "" for e in events if isinstance(e, Message) and e.sender == sender]


async def queued(relay: Relay, username: str) -> int:
    """Envelopes waiting in the relay's queues of ``username``'s devices."""
    query = (
        select(func.count())
        .select_from(QueueEntry)
        .join(Device, Device.pk == QueueEntry.device_pk)
        .join(Account, Account.id == Device.account_id)
        .where(Account.username == username)
    )
    async with relay.app.state.sessions() as session:
        return int((await session.execute(query)).scalar_one())
