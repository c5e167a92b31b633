"""SQL for push subscriptions (``AsyncSession`` in, rows out; callers commit)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import delete, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import Account, Device
from server.db.models_delivery import DeliverySend, QueueEntry
from server.push.models import PushSubscription

__all__ = [
    "Target",
    "count_for_device",
    "delete_all_for_device",
    "delete_by_pk",
    "delete_for_device",
    "find_by_endpoint",
    "list_for_device",
    "lock_device",
    "targets",
]


@dataclass(frozen=True, slots=True)
class Target:
    """One subscription to push to (``repr`` hides the endpoint's capability and keys)."""

    pk: int
    device_pk: int
    endpoint: str
    p256dh: bytes
    auth: bytes

    def __repr__(self) -> str:
        return f"Target(pk={self.pk}, device_pk={self.device_pk})"


async def lock_device(session: AsyncSession, device_pk: int) -> None:
    """Lock the device row until commit (PostgreSQL; SQLite callers hold the write lock)."""
    await session.execute(select(Device.pk).where(Device.pk == device_pk).with_for_update())


async def count_for_device(session: AsyncSession, device_pk: int) -> int:
    """Number of subscriptions the device has."""
    stmt = select(func.count()).select_from(PushSubscription)
    return int(await session.scalar(stmt.where(PushSubscription.device_pk == device_pk)) or 0)


async def find_by_endpoint(
    session: AsyncSession, device_pk: int, endpoint: str
) -> PushSubscription | None:
    """The device's subscription for ``endpoint``, if any."""
    stmt = select(PushSubscription).where(
        PushSubscription.device_pk == device_pk, PushSubscription.endpoint == endpoint
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def list_for_device(session: AsyncSession, device_pk: int) -> list[PushSubscription]:
    """The device's subscriptions, oldest first."""
    stmt = select(PushSubscription).where(PushSubscription.device_pk == device_pk)
    return list((await session.execute(stmt.order_by(PushSubscription.pk))).scalars())


async def delete_for_device(session: AsyncSession, device_pk: int, public_id: str) -> bool:
    """Delete one of the device's subscriptions by public id; False if there was none."""
    stmt = delete(PushSubscription).where(
        PushSubscription.device_pk == device_pk, PushSubscription.id == public_id
    )
    return bool((await session.execute(stmt)).rowcount)  # type: ignore[attr-defined]


async def delete_all_for_device(session: AsyncSession, device_pk: int) -> int:
    """Delete every subscription of the device; returns how many."""
    stmt = delete(PushSubscription).where(PushSubscription.device_pk == device_pk)
    return int((await session.execute(stmt)).rowcount)  # type: ignore[attr-defined]


async def delete_by_pk(session: AsyncSession, pk: int) -> None:
    """Delete a subscription the push service reported gone (404/410)."""
    await session.execute(delete(PushSubscription).where(PushSubscription.pk == pk))


async def targets(session: AsyncSession, device_pks: Iterable[int]) -> list[Target]:
    """Subscriptions of those devices that still have a queued envelope from another user.

    Copies of a user's own messages (sent from another of their devices) never notify, and
    a device that fetched and acked everything in the meantime is skipped.
    """
    pks = sorted(set(device_pks))
    if not pks:
        return []
    from_someone_else = exists(
        select(QueueEntry.seq)
        .join(DeliverySend, DeliverySend.envelope_id == QueueEntry.envelope_id)
        .where(QueueEntry.device_pk == PushSubscription.device_pk)
        .where(DeliverySend.sender_user != Account.username)
    )
    stmt = (
        select(
            PushSubscription.pk,
            PushSubscription.device_pk,
            PushSubscription.endpoint,
            PushSubscription.p256dh,
            PushSubscription.auth,
        )
        .join(Device, Device.pk == PushSubscription.device_pk)
        .join(Account, Account.id == Device.account_id)
        .where(PushSubscription.device_pk.in_(pks))
        .where(Device.revoked_at.is_(None))
        .where(from_someone_else)
        .order_by(PushSubscription.pk)
    )
    rows = (await session.execute(stmt)).all()
    return [Target(r.pk, r.device_pk, r.endpoint, bytes(r.p256dh), bytes(r.auth)) for r in rows]
