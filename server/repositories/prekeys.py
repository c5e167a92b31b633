"""Prekeys: signed prekeys on the device row, one-time prekeys claimed atomically."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import OneTimePrekey

__all__ = [
    "add_one_time",
    "claim_one_time",
    "count_by_kind",
    "count_one_time",
    "existing_key_ids",
]


async def count_one_time(session: AsyncSession, device_pk: int, kind: int) -> int:
    """Remaining one-time prekeys of ``kind`` for the device."""
    query = select(func.count()).where(
        OneTimePrekey.device_pk == device_pk, OneTimePrekey.kind == kind
    )
    return int(await session.scalar(query) or 0)


async def count_by_kind(session: AsyncSession, device_pk: int) -> dict[int, int]:
    """Remaining one-time prekeys of the device, per kind (one query)."""
    result = await session.execute(
        select(OneTimePrekey.kind, func.count())
        .where(OneTimePrekey.device_pk == device_pk)
        .group_by(OneTimePrekey.kind)
    )
    return {int(kind): int(n) for kind, n in result.all()}


async def existing_key_ids(
    session: AsyncSession, device_pk: int, kind: int, key_ids: Sequence[int]
) -> set[int]:
    """Which of ``key_ids`` are already stored for the device."""
    if not key_ids:
        return set()
    result = await session.execute(
        select(OneTimePrekey.key_id).where(
            OneTimePrekey.device_pk == device_pk,
            OneTimePrekey.kind == kind,
            OneTimePrekey.key_id.in_(list(key_ids)),
        )
    )
    return {int(k) for k in result.scalars()}


async def add_one_time(
    session: AsyncSession, device_pk: int, kind: int, keys: Sequence[tuple[int, bytes, bytes]]
) -> None:
    """Store ``(key_id, public_key, signature)`` triples."""
    session.add_all(
        OneTimePrekey(device_pk=device_pk, kind=kind, key_id=k, public_key=pub, signature=sig)
        for k, pub, sig in keys
    )
    await session.flush()


async def claim_one_time(
    session: AsyncSession, device_pk: int, kind: int
) -> tuple[int, bytes, bytes] | None:
    """Delete and return the device's oldest one-time prekey of ``kind`` (one statement).

    PostgreSQL: ``DELETE ... WHERE id = (SELECT id ... ORDER BY id LIMIT 1 FOR UPDATE SKIP
    LOCKED) RETURNING``, so concurrent claimers take different rows without waiting.
    SQLite ignores ``FOR UPDATE``; there the caller holds the database write lock
    (``server.db.engine.write_lock``), so the statement runs alone.
    """
    oldest = (
        select(OneTimePrekey.id)
        .where(OneTimePrekey.device_pk == device_pk, OneTimePrekey.kind == kind)
        .order_by(OneTimePrekey.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    result = await session.execute(
        delete(OneTimePrekey)
        .where(OneTimePrekey.id == oldest)
        .returning(OneTimePrekey.key_id, OneTimePrekey.public_key, OneTimePrekey.signature)
    )
    row = result.first()
    return None if row is None else (int(row[0]), bytes(row[1]), bytes(row[2]))
