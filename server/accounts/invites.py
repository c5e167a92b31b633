"""Invite tokens (stored as SHA-256 digests) with a use budget."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import Invite

__all__ = ["add_invite", "consume_invite", "count_invites", "delete_invite", "list_invites"]


async def add_invite(
    session: AsyncSession, *, token_hash: bytes, uses: int, expires_at: int | None, now: int
) -> None:
    """Store an invite."""
    session.add(
        Invite(token_hash=token_hash, uses_left=uses, expires_at=expires_at, created_at=now)
    )
    await session.flush()


async def list_invites(session: AsyncSession) -> Sequence[Invite]:
    """Every stored invite (used-up and expired ones too), oldest first."""
    result = await session.execute(select(Invite).order_by(Invite.id))
    return result.scalars().all()


async def delete_invite(session: AsyncSession, invite_id: int) -> bool:
    """Delete an invite so that it admits nobody; False when there is no such invite."""
    result = await session.execute(delete(Invite).where(Invite.id == invite_id))
    return bool(getattr(result, "rowcount", 0))


async def consume_invite(session: AsyncSession, token_hash: bytes, now: int) -> bool:
    """Take one use of a live invite in a single statement; False if none is left."""
    result = await session.execute(
        update(Invite)
        .where(
            Invite.token_hash == token_hash,
            Invite.uses_left > 0,
            or_(Invite.expires_at.is_(None), Invite.expires_at > now),
        )
        .values(uses_left=Invite.uses_left - 1)
        .returning(Invite.id)
    )
    return result.first() is not None


async def count_invites(session: AsyncSession, now: int) -> int:
    """Invites with uses left that have not expired."""
    query = select(func.count()).where(
        Invite.uses_left > 0, or_(Invite.expires_at.is_(None), Invite.expires_at > now)
    )
    return int(await session.scalar(query) or 0)
