"""Push subscriptions of a device: validation, registration, listing, removal.

A subscription is what ``PushSubscription.toJSON()`` gives in a browser (or what a
UnifiedPush distributor hands an Android app): an RFC 8030 endpoint URL plus the RFC 8291
keys ``p256dh`` (P-256 public key, 65 bytes uncompressed) and ``auth`` (16 bytes).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy.ext.asyncio import AsyncSession

from server.db.engine import write_lock
from server.errors import BadRequest, Conflict, NotFound
from server.push import repository as repo
from server.push.models import MAX_ENDPOINT_LENGTH, PushSubscription
from server.push.vapid import CONTENT_ENCODING, VapidKey
from wire.rest import VapidOut

__all__ = [
    "NewSubscription",
    "check_endpoint",
    "decode_b64url",
    "delete_all",
    "delete_subscription",
    "is_loopback_host",
    "list_subscriptions",
    "register",
    "vapid_out",
]

P256DH_LENGTH = 65
AUTH_LENGTH = 16


def _bad(message: str) -> BadRequest:
    return BadRequest(message, code="bad_subscription")


@dataclass(frozen=True, slots=True)
class NewSubscription:
    """A validated subscription (``repr`` hides the endpoint and keys)."""

    endpoint: str
    p256dh: bytes
    auth: bytes

    def __repr__(self) -> str:
        return "NewSubscription(...)"

    @classmethod
    def parse(
        cls, endpoint: str, p256dh: str, auth: str, *, allow_loopback: bool
    ) -> NewSubscription:
        """Validate the three fields (raises ``BadRequest(code="bad_subscription")``)."""
        check_endpoint(endpoint, allow_loopback=allow_loopback)
        key = decode_b64url(p256dh, "keys.p256dh")
        if len(key) != P256DH_LENGTH:
            raise _bad(f"keys.p256dh must be {P256DH_LENGTH} bytes (got {len(key)})")
        from cryptography.hazmat.primitives.asymmetric import ec  # loaded when first used

        try:
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), key)
        except ValueError:
            raise _bad("keys.p256dh is not an uncompressed P-256 public key") from None
        secret = decode_b64url(auth, "keys.auth")
        if len(secret) != AUTH_LENGTH:
            raise _bad(f"keys.auth must be {AUTH_LENGTH} bytes (got {len(secret)})")
        return cls(endpoint, key, secret)


def decode_b64url(value: str, name: str) -> bytes:
    """Strict base64url (``-`` and ``_``), padding optional."""
    if not value or len(value) > 200 or "=" in value.rstrip("=") or "+" in value or "/" in value:
        raise _bad(f"{name} is not base64url")
    text = value.rstrip("=")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise _bad(f"{name} is not base64url") from None


def is_loopback_host(host: str) -> bool:
    """``localhost`` names and loopback addresses."""
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_endpoint(endpoint: str, *, allow_loopback: bool) -> None:
    """An https URL on a public host (http and loopback only when ``allow_loopback``).

    The relay POSTs to this URL, so addresses inside the operator's network (private,
    loopback, link-local IP literals, ``localhost``) are refused here; names are checked
    again against their DNS answers before each push.
    """
    if len(endpoint) > MAX_ENDPOINT_LENGTH:
        raise _bad(f"endpoint is longer than {MAX_ENDPOINT_LENGTH} characters")
    if any(c.isspace() or ord(c) < 0x21 or ord(c) > 0x7E for c in endpoint):
        raise _bad("endpoint must be a URL of printable ASCII characters")
    try:
        parts = urlsplit(endpoint)
        port = parts.port
    except ValueError:
        raise _bad("endpoint is not a valid URL") from None
    host = parts.hostname or ""
    loopback = is_loopback_host(host) if host else False
    if parts.scheme != "https" and not (parts.scheme == "http" and allow_loopback and loopback):
        raise _bad("endpoint must be an https:// URL")
    if not host or parts.username is not None or parts.password is not None:
        raise _bad("endpoint must name a host (and no user name or password)")
    if parts.fragment or port == 0:
        raise _bad("endpoint must not have a fragment or port 0")
    if loopback:
        if not allow_loopback:
            raise _bad("endpoint must not point at this machine")
        return
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if "." not in host:
            raise _bad("endpoint host must be a public domain name") from None
        return
    if not address.is_global:
        raise _bad("endpoint must not point at a private or reserved address")


async def register(
    session: AsyncSession,
    device_pk: int,
    new: NewSubscription,
    *,
    max_per_device: int,
    now_ms: int,
) -> tuple[PushSubscription, bool]:
    """Store ``new`` for the device; ``(row, created)``. The same endpoint again updates its
    keys and keeps its id. Refuses (409) a device at ``max_per_device`` subscriptions."""
    await write_lock(session)
    await repo.lock_device(session, device_pk)
    existing = await repo.find_by_endpoint(session, device_pk, new.endpoint)
    if existing is not None:
        existing.p256dh, existing.auth = new.p256dh, new.auth
        await session.commit()
        return existing, False
    if await repo.count_for_device(session, device_pk) >= max_per_device:
        await session.rollback()
        raise Conflict(
            f"this device already has {max_per_device} push subscriptions; delete one first",
            code="too_many_subscriptions",
        )
    row = PushSubscription(
        id=secrets.token_hex(16),
        device_pk=device_pk,
        endpoint=new.endpoint,
        p256dh=new.p256dh,
        auth=new.auth,
        created_at=now_ms,
    )
    session.add(row)
    await session.commit()
    return row, True


async def list_subscriptions(session: AsyncSession, device_pk: int) -> list[PushSubscription]:
    """The device's subscriptions, oldest first."""
    return await repo.list_for_device(session, device_pk)


async def delete_subscription(session: AsyncSession, device_pk: int, public_id: str) -> None:
    """Delete one of the device's subscriptions (404 if it has none with this id)."""
    await write_lock(session)
    deleted = await repo.delete_for_device(session, device_pk, public_id)
    await session.commit()
    if not deleted:
        raise NotFound("no such push subscription on this device", code="not_found")


async def delete_all(session: AsyncSession, device_pk: int) -> int:
    """Delete every subscription of the device."""
    await write_lock(session)
    count = await repo.delete_all_for_device(session, device_pk)
    await session.commit()
    return count


async def vapid_out(key: VapidKey) -> VapidOut:
    """The VAPID key as ``GET /v1/push/vapid`` and ``/v1/config``'s ``push`` serve it."""
    await key.ready()
    return VapidOut(public_key=key.public_key_b64, content_encoding=CONTENT_ENCODING)
