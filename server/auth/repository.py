"""Challenges and bearer tokens (stored only as SHA-256 digests)."""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import Account, AuthChallenge, AuthToken, Device

__all__ = [
    "add_challenge",
    "add_token",
    "challenge_counts",
    "dead_tokens",
    "delete_expired",
    "delete_expired_for_device",
    "delete_oldest_challenges",
    "find_token",
    "revoke_token",
    "take_challenge",
]


async def add_challenge(
    session: AsyncSession,
    *,
    nonce_hash: bytes,
    device_pk: int,
    expires_at: int,
    requester: str = "",
) -> None:
    """Store a challenge."""
    session.add(
        AuthChallenge(
            nonce_hash=nonce_hash, device_pk=device_pk, expires_at=expires_at, requester=requester
        )
    )
    await session.flush()


async def challenge_counts(session: AsyncSession, device_pk: int) -> dict[str, tuple[int, int]]:
    """The device's outstanding challenges per requester: ``{requester: (count, newest id)}``."""
    result = await session.execute(
        select(AuthChallenge.requester, func.count(), func.max(AuthChallenge.id))
        .where(AuthChallenge.device_pk == device_pk)
        .group_by(AuthChallenge.requester)
    )
    return {str(r): (int(n), int(newest)) for r, n, newest in result.all()}


async def delete_oldest_challenges(
    session: AsyncSession, device_pk: int, requester: str, count: int
) -> None:
    """Delete the ``count`` oldest challenges that ``requester`` holds for the device."""
    oldest = (
        select(AuthChallenge.id)
        .where(AuthChallenge.device_pk == device_pk, AuthChallenge.requester == requester)
        .order_by(AuthChallenge.id)
        .limit(count)
    )
    await session.execute(delete(AuthChallenge).where(AuthChallenge.id.in_(oldest)))


async def take_challenge(session: AsyncSession, nonce_hash: bytes) -> tuple[int, int] | None:
    """Delete the challenge and return ``(device_pk, expires_at)`` — at most once, ever."""
    result = await session.execute(
        delete(AuthChallenge)
        .where(AuthChallenge.nonce_hash == nonce_hash)
        .returning(AuthChallenge.device_pk, AuthChallenge.expires_at)
    )
    row = result.first()
    return None if row is None else (int(row[0]), int(row[1]))


async def delete_expired_for_device(session: AsyncSession, device_pk: int, now: int) -> None:
    """Forget the device's expired challenges and tokens."""
    await session.execute(
        delete(AuthChallenge).where(
            AuthChallenge.device_pk == device_pk, AuthChallenge.expires_at <= now
        )
    )
    await session.execute(
        delete(AuthToken).where(AuthToken.device_pk == device_pk, AuthToken.expires_at <= now)
    )


async def delete_expired(session: AsyncSession, now: int) -> tuple[int, int]:
    """Delete every expired challenge and token; return how many of each."""
    ch = await session.execute(delete(AuthChallenge).where(AuthChallenge.expires_at <= now))
    tok = await session.execute(delete(AuthToken).where(AuthToken.expires_at <= now))
    return int(getattr(ch, "rowcount", 0) or 0), int(getattr(tok, "rowcount", 0) or 0)


async def add_token(
    session: AsyncSession, *, token_hash: bytes, device_pk: int, now: int, expires_at: int
) -> None:
    """Store a token digest."""
    session.add(
        AuthToken(token_hash=token_hash, device_pk=device_pk, created_at=now, expires_at=expires_at)
    )
    await session.flush()


async def find_token(
    session: AsyncSession, token_hash: bytes
) -> tuple[AuthToken, Device, Account] | None:
    """The token with this digest, with its device and account (whatever their state)."""
    result = await session.execute(
        select(AuthToken, Device, Account)
        .join(Device, Device.pk == AuthToken.device_pk)
        .join(Account, Account.id == Device.account_id)
        .where(AuthToken.token_hash == token_hash)
    )
    row = result.first()
    return None if row is None else (row[0], row[1], row[2])


async def dead_tokens(session: AsyncSession, token_ids: list[int], now: int) -> set[int]:
    """Those of ``token_ids`` that no longer authenticate (revoked, expired, device revoked
    or deleted)."""
    result = await session.execute(
        select(AuthToken.id)
        .join(Device, Device.pk == AuthToken.device_pk)
        .where(
            AuthToken.id.in_(token_ids),
            AuthToken.revoked_at.is_(None),
            AuthToken.expires_at > now,
            Device.revoked_at.is_(None),
        )
    )
    live = {int(r[0]) for r in result.all()}
    return set(token_ids) - live


async def revoke_token(session: AsyncSession, token_id: int, now: int) -> None:
    """Revoke one token."""
    token = await session.get(AuthToken, token_id)
    if token is not None and token.revoked_at is None:
        token.revoked_at = now
