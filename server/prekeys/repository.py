"""Prekeys: signed prekeys on the device row, one-time prekeys claimed atomically."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import case, delete, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import OneTimePrekey, PrekeyClaim

__all__ = [
    "add_one_time",
    "claim_one_time",
    "count_all",
    "count_by_kind",
    "count_one_time",
    "existing_key_ids",
    "lock_claims",
    "recent_claims",
    "record_claim",
]

#: ``pg_advisory_xact_lock(int4, int4)`` class of the per-target claim lock: "VoxP".
_CLAIM_LOCK_CLASS = 0x566F7850
_LOCK_CLAIMS_PG = text("SELECT pg_advisory_xact_lock(:cls, :key)")


async def count_one_time(session: AsyncSession, device_pk: int, kind: int) -> int:
    """Remaining one-time prekeys of ``kind`` for the device."""
    query = select(func.count()).where(
        OneTimePrekey.device_pk == device_pk, OneTimePrekey.kind == kind
    )
    return int(await session.scalar(query) or 0)


async def count_all(session: AsyncSession) -> int:
    """One-time prekeys stored for every device, both kinds."""
    return int(await session.scalar(select(func.count()).select_from(OneTimePrekey)) or 0)


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


async def lock_claims(session: AsyncSession, device_pk: int) -> None:
    """Serialise claims of one target device until the transaction ends, so that "count the
    last hour's claims, then claim" is exact across relay nodes. PostgreSQL: an advisory
    transaction lock; SQLite: nothing (the caller holds the write lock)."""
    bind = session.bind
    if bind is not None and bind.dialect.name == "postgresql":
        key = (device_pk + 2**31) % 2**32 - 2**31
        await session.execute(_LOCK_CLAIMS_PG, {"cls": _CLAIM_LOCK_CLASS, "key": key})


async def recent_claims(
    session: AsyncSession, device_pk: int, requester_pk: int, since: int
) -> tuple[int, int]:
    """``(all requesters, this requester)``: claims of the device's one-time prekeys after
    ``since``. Older claim records are deleted first (only the window is kept)."""
    await session.execute(
        delete(PrekeyClaim).where(
            PrekeyClaim.device_pk == device_pk, PrekeyClaim.claimed_at <= since
        )
    )
    row = (
        await session.execute(
            select(
                func.count(),
                func.coalesce(
                    func.sum(case((PrekeyClaim.requester_pk == requester_pk, 1), else_=0)), 0
                ),
            ).where(PrekeyClaim.device_pk == device_pk)
        )
    ).one()
    return int(row[0]), int(row[1])


async def record_claim(session: AsyncSession, device_pk: int, requester_pk: int, now: int) -> None:
    """Remember that ``requester_pk`` was handed one-time prekeys of ``device_pk``."""
    await session.execute(
        insert(PrekeyClaim).values(device_pk=device_pk, requester_pk=requester_pk, claimed_at=now)
    )
