"""Accounts and devices."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.device_rows import delete_device_deliveries
from server.db.models import Account, AuthToken, DeletedUsername, Device
from server.db.models_delivery import Attachment

__all__ = [
    "add_account",
    "add_device",
    "count_accounts",
    "count_devices",
    "delete_account",
    "delete_devices",
    "deleted_username",
    "get_account",
    "get_account_for_update",
    "get_device",
    "list_devices",
    "quarantine_username",
    "reserved_until",
    "revoke_device",
    "skeleton_taken",
    "take_attachments",
    "unrevoke_device",
]


async def get_account(session: AsyncSession, username: str) -> Account | None:
    """The account named ``username``."""
    result = await session.execute(select(Account).where(Account.username == username))
    return result.scalar_one_or_none()


async def skeleton_taken(session: AsyncSession, skeleton: str) -> bool:
    """True when an account's username has this confusable skeleton."""
    result = await session.execute(
        select(Account.id).where(Account.username_skeleton == skeleton).limit(1)
    )
    return result.first() is not None


async def get_account_for_update(session: AsyncSession, username: str) -> Account | None:
    """The account named ``username``, row-locked on PostgreSQL until the transaction ends."""
    result = await session.execute(
        select(Account).where(Account.username == username).with_for_update()
    )
    return result.scalar_one_or_none()


async def add_account(
    session: AsyncSession,
    *,
    username: str,
    account_key: bytes,
    device_list: bytes,
    version: int,
    now: int,
    username_skeleton: str | None = None,
) -> Account:
    """Insert an account (flushes, so ``id`` is set)."""
    account = Account(
        username=username,
        username_skeleton=username_skeleton,
        account_key=account_key,
        device_list=device_list,
        device_list_version=version,
        created_at=now,
    )
    session.add(account)
    await session.flush()
    return account


async def add_device(
    session: AsyncSession,
    *,
    account_id: int,
    device_id: int,
    identity_key: bytes,
    auth_key: bytes,
    now: int,
) -> Device:
    """Insert a device (flushes, so ``pk`` is set)."""
    device = Device(
        account_id=account_id,
        device_id=device_id,
        identity_key=identity_key,
        auth_key=auth_key,
        created_at=now,
    )
    session.add(device)
    await session.flush()
    return device


async def get_device(session: AsyncSession, username: str, device_id: int) -> Device | None:
    """The device ``device_id`` of ``username``."""
    result = await session.execute(
        select(Device)
        .join(Account, Account.id == Device.account_id)
        .where(Account.username == username, Device.device_id == device_id)
    )
    return result.scalar_one_or_none()


async def list_devices(session: AsyncSession, account_id: int) -> Sequence[Device]:
    """The account's devices, by ascending device id."""
    result = await session.execute(
        select(Device).where(Device.account_id == account_id).order_by(Device.device_id)
    )
    return result.scalars().all()


async def delete_devices(session: AsyncSession, device_pks: Sequence[int]) -> None:
    """Delete devices: their delivery rows explicitly (those tables have no foreign keys),
    then the devices; foreign keys cascade to tokens, challenges and prekeys."""
    if device_pks:
        await delete_device_deliveries(session, device_pks)
        await session.execute(delete(Device).where(Device.pk.in_(device_pks)))


async def revoke_device(session: AsyncSession, device_pk: int, now: int) -> int:
    """Mark the device revoked and revoke its live tokens; return how many tokens."""
    await session.execute(update(Device).where(Device.pk == device_pk).values(revoked_at=now))
    result = await session.execute(
        update(AuthToken)
        .where(AuthToken.device_pk == device_pk, AuthToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def count_accounts(session: AsyncSession) -> int:
    """Number of accounts."""
    return int(await session.scalar(select(func.count()).select_from(Account)) or 0)


async def count_devices(session: AsyncSession) -> int:
    """Number of devices."""
    return int(await session.scalar(select(func.count()).select_from(Device)) or 0)


async def unrevoke_device(session: AsyncSession, device_pk: int) -> bool:
    """Allow a revoked device to log in again; False when it was not revoked.

    Its revoked tokens stay revoked: the device logs in afresh with a challenge.
    """
    result = await session.execute(
        update(Device)
        .where(Device.pk == device_pk, Device.revoked_at.is_not(None))
        .values(revoked_at=None)
    )
    return bool(getattr(result, "rowcount", 0))


async def take_attachments(session: AsyncSession, device_pks: Sequence[int]) -> list[str]:
    """Delete the attachment rows these devices uploaded; return their blob ids."""
    if not device_pks:
        return []
    result = await session.execute(
        delete(Attachment)
        .where(Attachment.uploader_device_pk.in_(device_pks))
        .returning(Attachment.id)
    )
    return [row[0] for row in result]


async def delete_account(session: AsyncSession, account_id: int) -> None:
    """Delete the account, its devices and everything they own (delivery rows explicitly,
    the rest through foreign keys)."""
    device_pks = (
        (await session.execute(select(Device.pk).where(Device.account_id == account_id)))
        .scalars()
        .all()
    )
    await delete_device_deliveries(session, device_pks)
    await session.execute(delete(Device).where(Device.account_id == account_id))
    await session.execute(delete(Account).where(Account.id == account_id))


async def quarantine_username(
    session: AsyncSession, *, username: str, skeleton: str, now: int, released_at: int
) -> None:
    """Remember a deleted account's name, reserved (with its look-alikes) until ``released_at``."""
    await session.execute(delete(DeletedUsername).where(DeletedUsername.username == username))
    session.add(
        DeletedUsername(
            username=username, username_skeleton=skeleton, deleted_at=now, released_at=released_at
        )
    )
    await session.flush()


async def reserved_until(
    session: AsyncSession, username: str, skeleton: str, now: int
) -> int | None:
    """When a quarantine on this name or a look-alike of it ends; None when there is none."""
    result = await session.scalar(
        select(func.max(DeletedUsername.released_at)).where(
            or_(
                DeletedUsername.username == username,
                DeletedUsername.username_skeleton == skeleton,
            ),
            DeletedUsername.released_at > now,
        )
    )
    return None if result is None else int(result)


async def deleted_username(session: AsyncSession, username: str) -> DeletedUsername | None:
    """The record of a deleted account of this name, if one was ever deleted."""
    return await session.get(DeletedUsername, username)
