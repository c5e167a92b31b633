"""What the relay holds, for its operator (``vox-relay stats``): counts, never contents."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from server.accounts import invites as invite_repo
from server.accounts import repository as account_repo
from server.delivery.repository import DeliveryRepository
from server.prekeys import repository as prekey_repo

__all__ = ["relay_stats"]


async def relay_stats(session: AsyncSession, *, now: int) -> dict[str, int]:
    """Accounts, devices, invites still usable at ``now``, stored one-time prekeys and queued
    envelopes."""
    queued = await session.run_sync(
        lambda sync: DeliveryRepository().queue_depth_total(sync.connection())
    )
    return {
        "accounts": await account_repo.count_accounts(session),
        "devices": await account_repo.count_devices(session),
        "active_invites": await invite_repo.count_invites(session, now),
        "one_time_prekeys": await prekey_repo.count_all(session),
        "queued_envelopes": queued,
    }
