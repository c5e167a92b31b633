"""Challenges and bearer tokens (stored only as SHA-256 digests)."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import Account, AuthChallenge, AuthToken, Device

__all__ = [
    "add_challenge",
    "add_token",
    "delete_expired",
    "delete_expired_for_device",
    "find_token",
    "revoke_token",
    "take_challenge",
    "trim_challenges",
]


async def add_challenge(
    session: AsyncSession, *, nonce_hash: bytes, device_pk: int, expires_at: int
) -> None:
    """Store a challenge."""
    session.add(AuthChallenge(nonce_hash=nonce_hash, device_pk=device_pk, expires_at=expires_at))
    await session.flush()


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


async def trim_challenges(session: AsyncSession, device_pk: int, keep: int) -> None:
    """Keep only the device's ``keep`` newest outstanding challenges."""
    newest = (
        select(AuthChallenge.id)
        .where(AuthChallenge.device_pk == device_pk)
        .order_by(AuthChallenge.id.desc())
        .limit(keep)
    )
    await session.execute(
        delete(AuthChallenge).where(
            AuthChallenge.device_pk == device_pk, AuthChallenge.id.not_in(newest)
        )
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


async def revoke_token(session: AsyncSession, token_id: int, now: int) -> None:
    """Revoke one token."""
    token = await session.get(AuthToken, token_id)
    if token is not None and token.revoked_at is None:
        token.revoked_at = now
