"""Accounts and devices."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import Account, AuthToken, Device

__all__ = [
    "add_account",
    "add_device",
    "count_accounts",
    "count_devices",
    "delete_devices",
    "get_account",
    "get_account_for_update",
    "get_device",
    "list_devices",
    "revoke_device",
    "skeleton_taken",
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
    """Delete devices; foreign keys cascade to tokens, challenges, prekeys and envelopes."""
    if device_pks:
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
