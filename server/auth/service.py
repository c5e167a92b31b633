"""Challenge–response login and bearer tokens.

Public entry points (also used by the WebSocket layer):

* :func:`authenticate_token` — ``await authenticate_token(session, token, now=...)`` returns an
  :class:`AuthenticatedDevice` or raises :class:`~server.errors.Unauthorized`. The
  WebSocket's first frame carries the same token as the ``Authorization: Bearer`` header.
* :func:`create_challenge`, :func:`issue_token`, :func:`revoke_token`.

The signed message (``docs/protocol-relay.md``)::

    b"VoxAuthChallenge-v1" || 0x00 || str16 username || u32 device_id || nonce (32 bytes)

Tokens are 32 random bytes, base64url without padding (43 characters); only their SHA-256
digest is stored. Nonces are 32 random bytes, stored as SHA-256, deleted when used (or
tried): a challenge can be answered once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import struct
from dataclasses import dataclass

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from server.accounts.device_list import verify_ed25519
from server.auth import repository as auth_repo
from server.db.engine import write_lock
from server.db.onehop import OneHop
from server.errors import Forbidden, NotFound, Unauthorized

__all__ = [
    "CHALLENGE_CONTEXT",
    "AuthenticatedDevice",
    "ChallengeBounds",
    "authenticate_token",
    "challenge_message",
    "create_challenge",
    "hash_secret",
    "issue_token",
    "requester_tag",
    "revoke_token",
]

CHALLENGE_CONTEXT = b"VoxAuthChallenge-v1"
NONCE_LEN = 32
TOKEN_LEN = 32


@dataclass(frozen=True, slots=True)
class ChallengeBounds:
    """How many unanswered challenges a device keeps (``limits.max_challenges_*``).

    A requester (one client address) holds at most ``per_requester`` of a device's
    challenges: asking for more drops *its own* oldest one. When the device holds
    ``per_device`` in all, one challenge of the requester holding the most is dropped, and
    among requesters holding equally many, of the one that asked most recently. The owner,
    who asks once and answers within a second, is therefore never the one to go unless
    ``per_device - 1`` other addresses hold exactly one challenge each *and* one of them asks
    in the moment between the owner's request and answer.
    """

    per_device: int = 64
    per_requester: int = 8


def requester_tag(address: str) -> str:
    """What a challenge stores about who asked: 16 hex digits of a hash, never the address."""
    return hashlib.sha256(b"vox-challenge-requester\x00" + address.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class AuthenticatedDevice:
    """The device a valid bearer token belongs to."""

    device_pk: int
    device_id: int
    account_id: int
    username: str
    token_id: int
    expires_at: int


def hash_secret(secret: bytes) -> bytes:
    """SHA-256 digest under which nonces, tokens and invites are stored."""
    return hashlib.sha256(secret).digest()


def challenge_message(username: str, device_id: int, nonce: bytes) -> bytes:
    """The exact bytes a device signs with its Ed25519 auth key to get a token."""
    name = username.encode("utf-8")
    return (
        CHALLENGE_CONTEXT
        + b"\x00"
        + struct.pack(">H", len(name))
        + name
        + struct.pack(">I", device_id)
        + nonce
    )


def _decode_token(token: str) -> bytes:
    if len(token) != 43:
        raise Unauthorized("malformed bearer token", code="invalid_token")
    try:
        raw = base64.urlsafe_b64decode(token + "=")
    except (binascii.Error, ValueError):
        raise Unauthorized("malformed bearer token", code="invalid_token") from None
    if len(raw) != TOKEN_LEN:
        raise Unauthorized("malformed bearer token", code="invalid_token")
    return raw


async def authenticate_token(session: AsyncSession, token: str, *, now: int) -> AuthenticatedDevice:
    """Resolve a bearer token to its device; raise ``Unauthorized`` if it is not live."""
    digest = hash_secret(_decode_token(token))
    found = await auth_repo.find_token(session, digest)
    if found is None or not hmac.compare_digest(found[0].token_hash, digest):
        raise Unauthorized("unknown bearer token", code="invalid_token")
    row, device, account = found
    if row.revoked_at is not None or device.revoked_at is not None:
        raise Unauthorized("bearer token was revoked", code="token_revoked")
    if row.expires_at <= now:
        raise Unauthorized("bearer token has expired", code="token_expired")
    return AuthenticatedDevice(
        device_pk=device.pk,
        device_id=device.device_id,
        account_id=account.id,
        username=account.username,
        token_id=row.id,
        expires_at=row.expires_at,
    )


async def create_challenge(
    hop: OneHop,
    username: str,
    device_id: int,
    *,
    now: int,
    ttl: int,
    requester: str = "",
    bounds: ChallengeBounds = ChallengeBounds(),
) -> tuple[bytes, int]:
    """Store a fresh nonce for the device; return ``(nonce, expires_at)``. One transaction.

    ``requester`` is :func:`requester_tag` of the client address; see :class:`ChallengeBounds`.
    """
    nonce = secrets.token_bytes(NONCE_LEN)

    def store(conn: Connection) -> NotFound | Forbidden | None:
        device = auth_repo.login_device(conn, username, device_id)
        if device is None:
            return NotFound(f"no device {device_id} for user {username!r}", code="unknown_device")
        if device.revoked_at is not None:
            return Forbidden("this device was revoked by the relay operator", code="device_revoked")
        auth_repo.delete_expired_for_device(conn, device.pk, now)
        _make_room(conn, device.pk, requester, bounds)
        auth_repo.add_challenge(
            conn,
            nonce_hash=hash_secret(nonce),
            device_pk=device.pk,
            expires_at=now + ttl,
            requester=requester,
        )
        return None

    refusal = await hop.write(store)
    if refusal is not None:
        raise refusal
    return nonce, now + ttl


def _make_room(conn: Connection, device_pk: int, requester: str, bounds: ChallengeBounds) -> None:
    """Drop challenges so that one more from ``requester`` fits within ``bounds``."""
    counts = auth_repo.challenge_counts(conn, device_pk)
    own = counts.get(requester, (0, 0))[0]
    if own >= bounds.per_requester:
        auth_repo.delete_oldest_challenges(
            conn, device_pk, requester, own - bounds.per_requester + 1
        )
        return  # the total did not grow
    if sum(n for n, _ in counts.values()) >= bounds.per_device:
        # The requester holding the most (on a tie: the one that asked last) gives one up.
        heaviest = max(counts, key=lambda r: counts[r])
        auth_repo.delete_oldest_challenges(conn, device_pk, heaviest, 1)


async def issue_token(
    hop: OneHop,
    username: str,
    device_id: int,
    nonce: bytes,
    signature: bytes,
    *,
    now: int,
    ttl: int,
) -> tuple[str, int]:
    """Check the signed challenge and return ``(token, expires_at)``. One transaction.

    The challenge is consumed by the first attempt, successful or not.
    """
    if len(nonce) != NONCE_LEN:
        raise Unauthorized("unknown or already used challenge", code="invalid_challenge")
    raw = secrets.token_bytes(TOKEN_LEN)

    # The challenge is taken, the signature checked (~50 µs, under the write lock) and the
    # token stored together; a refusal still commits the taken challenge.
    def store(conn: Connection) -> Unauthorized | Forbidden | None:
        taken = auth_repo.take_challenge(conn, hash_secret(nonce))
        device = auth_repo.login_device(conn, username, device_id)
        if taken is None or device is None or taken[0] != device.pk:
            return Unauthorized("unknown or already used challenge", code="invalid_challenge")
        if taken[1] <= now:
            return Unauthorized("challenge has expired", code="challenge_expired")
        if device.revoked_at is not None:
            return Forbidden("this device was revoked by the relay operator", code="device_revoked")
        if not verify_ed25519(
            device.auth_key, signature, challenge_message(username, device_id, nonce)
        ):
            return Unauthorized(
                "signature does not verify with the device auth key", code="bad_signature"
            )
        auth_repo.add_token(
            conn, token_hash=hash_secret(raw), device_pk=device.pk, now=now, expires_at=now + ttl
        )
        return None

    refusal = await hop.write(store)
    if refusal is not None:
        raise refusal
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii"), now + ttl


async def revoke_token(session: AsyncSession, device: AuthenticatedDevice, *, now: int) -> None:
    """Revoke the token the device authenticated with. Commits."""
    await write_lock(session)
    await auth_repo.revoke_token(session, device.token_id, now)
    await session.commit()
