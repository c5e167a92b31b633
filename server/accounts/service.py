"""Registration and signed device-list updates.

A username is refused when it, or a name that looks like it (the same confusable skeleton,
``server.accounts.usernames``), is already registered.

A device list is accepted only when it parses, is signed by the stored account key, names
the account, and carries a version strictly greater than the stored one. The device set
is then *derived* from it: new ids are inserted, missing ids (or ids whose keys changed)
are deleted, which cascades to their tokens, challenges, prekeys and queued envelopes.

Deleting an account (by one of its devices, proven with an account-key signature, or by the
operator) removes it with its devices, queues, prekeys, tokens, push subscriptions and the
attachments its devices uploaded, and records the name in ``deleted_usernames``: a fetch of
its devices then answers 410 ``account_deleted``, and the name and its look-alikes stay
reserved for ``username_quarantine_days``.

The operator (``vox-relay``) goes through the same functions, plus its own: revoking and
unrevoking a device, and creating, listing and revoking invites.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from server.accounts import invites as invite_repo
from server.accounts import repository as account_repo
from server.accounts.device_list import (
    DeviceListError,
    SignedDeviceList,
    ed25519_public,
    parse_device_list,
    verify_ed25519,
)
from server.accounts.usernames import skeleton
from server.attachments.storage import AttachmentStore
from server.auth.service import hash_secret
from server.db.engine import write_lock
from server.db.models import Account, Device
from server.errors import BadRequest, Conflict, DomainError, Forbidden, Gone, NotFound
from server.notify import DeviceNotifier
from server.prekeys.service import store_prekeys, validate_upload
from server.settings import DAY, RegistrationPolicy, Settings
from wire.rest import RegisterIn

__all__ = [
    "ACCOUNT_DELETE_CONTEXT",
    "DeletedAccount",
    "DeviceListUpdate",
    "InviteInfo",
    "RevokedDevice",
    "account_devices",
    "create_invite",
    "delete_account",
    "deletion_message",
    "finish_deletion",
    "list_invites",
    "missing_user",
    "register",
    "revoke_device",
    "revoke_invite",
    "unrevoke_device",
    "update_device_list",
]

#: An account deletion is signed by the account key over ``context || 0x00 || username``.
ACCOUNT_DELETE_CONTEXT = b"VoxAccountDelete-v1"


@dataclass(frozen=True, slots=True)
class DeviceListUpdate:
    """Result of a device-list update: the account, its devices, and removed device pks."""

    account: Account
    devices: list[Device]
    removed_device_pks: list[int]


@dataclass(frozen=True, slots=True)
class DeletedAccount:
    """What a deletion removed: the devices to disconnect and the blobs to erase."""

    username: str
    device_pks: list[int]
    blob_ids: list[str]
    released_at: int


def deletion_message(username: str) -> bytes:
    """The bytes an account key signs to delete the account ``username``."""
    return ACCOUNT_DELETE_CONTEXT + b"\x00" + username.encode("utf-8")


def _parse_and_verify(blob: bytes, username: str, account_key: bytes) -> SignedDeviceList:
    try:
        signed = parse_device_list(blob)
        if signed.username != username:
            raise DeviceListError(f"device list is for {signed.username!r}, not {username!r}")
        signed.verify(account_key)
    except DeviceListError as exc:
        raise BadRequest(str(exc), code="invalid_device_list") from None
    return signed


async def _check_invite(
    session: AsyncSession, settings: Settings, invite: str | None, now: int
) -> None:
    if settings.registration is RegistrationPolicy.CLOSED:
        raise Forbidden("registration is closed on this relay", code="registration_closed")
    if settings.registration is RegistrationPolicy.INVITE:
        if not invite:
            raise Forbidden("this relay requires an invite token", code="invite_required")
        if not await invite_repo.consume_invite(session, hash_secret(invite.encode("utf-8")), now):
            raise Forbidden("invite token is unknown, used up or expired", code="invalid_invite")


async def register(
    session: AsyncSession, settings: Settings, req: RegisterIn, *, now: int
) -> Device:
    """Create the account and its first device with its prekeys. Commits."""
    if settings.registration is RegistrationPolicy.CLOSED:
        raise Forbidden("registration is closed on this relay", code="registration_closed")
    try:
        ed25519_public(req.account_key)
    except DeviceListError as exc:
        raise BadRequest(f"account_key: {exc}", code="invalid_key") from None
    signed = _parse_and_verify(req.device_list, req.username, req.account_key)
    if signed.version != 1 or len(signed.devices) != 1:
        raise BadRequest(
            "the first device list must have version 1 and exactly one device",
            code="invalid_device_list",
        )
    if req.prekeys.signed_prekey is None or req.prekeys.last_resort_prekey is None:
        raise BadRequest(
            "registration needs a signed prekey and a last-resort prekey", code="missing_prekeys"
        )
    validate_upload(req.prekeys, settings.limits)
    await write_lock(session)
    if await account_repo.get_account(session, req.username) is not None:
        raise Conflict(f"username {req.username!r} is taken", code="username_taken")
    name_skeleton = skeleton(req.username)
    if await account_repo.skeleton_taken(session, name_skeleton):
        raise Conflict(
            f"username {req.username!r} looks like an existing username "
            "(same confusable skeleton); choose another",
            code="username_lookalike",
        )
    t = now
    until = await account_repo.reserved_until(session, req.username, name_skeleton, t)
    if until is not None:
        raise Conflict(
            f"username {req.username!r} (or a look-alike of it) belonged to a deleted account "
            f"and is reserved for {max(1, -(-(until - t) // DAY))} more day(s)",
            code="username_quarantined",
        )
    await _check_invite(session, settings, req.invite, t)
    try:
        account = await account_repo.add_account(
            session,
            username=req.username,
            username_skeleton=name_skeleton,
            account_key=req.account_key,
            device_list=req.device_list,
            version=signed.version,
            now=t,
        )
        listed = signed.devices[0]
        device = await account_repo.add_device(
            session,
            account_id=account.id,
            device_id=listed.device_id,
            identity_key=listed.identity_key,
            auth_key=listed.auth_key,
            now=t,
        )
        await store_prekeys(session, device, req.prekeys, settings.limits)
        await session.commit()
    except IntegrityError:
        # A concurrent registration (PostgreSQL) took the name or a look-alike of it.
        await session.rollback()
        raise Conflict(
            f"username {req.username!r} (or a look-alike of it) is taken", code="username_taken"
        ) from None
    return device


async def account_devices(session: AsyncSession, username: str) -> tuple[Account, list[Device]]:
    """The account and its devices."""
    account = await account_repo.get_account(session, username)
    if account is None:
        raise await missing_user(session, username)
    return account, list(await account_repo.list_devices(session, account.id))


async def missing_user(session: AsyncSession, username: str) -> DomainError:
    """The error for a name with no account: 410 ``account_deleted`` or 404 ``unknown_user``."""
    if await account_repo.deleted_username(session, username) is not None:
        return Gone(f"the account {username!r} was deleted", code="account_deleted")
    return NotFound(f"no user {username!r}", code="unknown_user")


async def delete_account(
    session: AsyncSession,
    settings: Settings,
    username: str,
    *,
    now: int,
    signature: bytes | None = None,
    account_id: int | None = None,
) -> DeletedAccount:
    """Delete the account and all it owns; quarantine its name. Commits.

    A device deleting its own account passes ``account_id`` (its token's account) and the
    account key's ``signature`` over :func:`deletion_message`; the operator passes neither.
    The caller disconnects ``device_pks`` and erases ``blob_ids`` from the attachment store.
    """
    await write_lock(session)
    account = await account_repo.get_account_for_update(session, username)
    if account is None:
        raise await missing_user(session, username)
    if account_id is not None:
        if account.id != account_id:
            raise Forbidden("a device may only delete its own account", code="not_your_account")
        if signature is None or not verify_ed25519(
            account.account_key, signature, deletion_message(username)
        ):
            raise Forbidden(
                "the deletion must be signed by the account key", code="invalid_signature"
            )
    device_pks = [d.pk for d in await account_repo.list_devices(session, account.id)]
    blob_ids = await account_repo.take_attachments(session, device_pks)
    await account_repo.delete_account(session, account.id)
    t = now
    released_at = t + settings.username_quarantine_days * DAY
    await account_repo.quarantine_username(
        session,
        username=username,
        skeleton=account.username_skeleton or skeleton(username),
        now=t,
        released_at=released_at,
    )
    await session.commit()
    return DeletedAccount(username, device_pks, blob_ids, released_at)


async def update_device_list(
    session: AsyncSession, account_id: int, username: str, blob: bytes, *, now: int
) -> DeviceListUpdate:
    """Replace the account's signed device list (caller is a device of ``account_id``). Commits."""
    await write_lock(session)
    account = await account_repo.get_account_for_update(session, username)
    if account is None:
        raise NotFound(f"no user {username!r}", code="unknown_user")
    if account.id != account_id:
        raise Forbidden(
            "a device may only change its own account's device list", code="not_your_account"
        )
    signed = _parse_and_verify(blob, username, account.account_key)
    if signed.version <= account.device_list_version:
        raise Conflict(
            f"device list version {signed.version} is not newer than the stored "
            f"version {account.device_list_version}",
            code="stale_device_list",
        )
    current = {d.device_id: d for d in await account_repo.list_devices(session, account.id)}
    wanted = {d.device_id: d for d in signed.devices}
    removed = [
        dev.pk
        for dev_id, dev in current.items()
        if dev_id not in wanted
        or (dev.identity_key, dev.auth_key)
        != (wanted[dev_id].identity_key, wanted[dev_id].auth_key)
    ]
    await account_repo.delete_devices(session, removed)
    t = now
    keep = {dev_id for dev_id, dev in current.items() if dev.pk not in removed}
    for dev_id, listed in wanted.items():
        if dev_id not in keep:
            await account_repo.add_device(
                session,
                account_id=account.id,
                device_id=dev_id,
                identity_key=listed.identity_key,
                auth_key=listed.auth_key,
                now=t,
            )
    account.device_list = blob
    account.device_list_version = signed.version
    await session.commit()
    session.expire_all()
    fresh = await account_repo.get_account(session, username)
    assert fresh is not None
    devices = list(await account_repo.list_devices(session, fresh.id))
    return DeviceListUpdate(fresh, devices, removed)


async def finish_deletion(
    deleted: DeletedAccount, notifier: DeviceNotifier, store: AttachmentStore
) -> None:
    """After :func:`delete_account` committed: close the devices' sockets, erase the blobs."""
    for pk in deleted.device_pks:
        await notifier.disconnect(pk, "account deleted")
    for blob_id in deleted.blob_ids:
        await store.delete(blob_id)


# -- the operator's -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RevokedDevice:
    """A device the operator revoked: its pk (to disconnect) and how many tokens died."""

    device_pk: int
    tokens_revoked: int


async def _operated_device(session: AsyncSession, username: str, device_id: int) -> Device:
    device = await account_repo.get_device(session, username, device_id)
    if device is None:
        raise NotFound(f"no device {device_id} for user {username!r}", code="unknown_device")
    return device


async def revoke_device(
    session: AsyncSession, username: str, device_id: int, *, now: int
) -> RevokedDevice:
    """Revoke all of a device's tokens and refuse its logins (403 ``device_revoked``) until
    :func:`unrevoke_device`. Commits; the caller disconnects ``device_pk``."""
    await write_lock(session)
    device = await _operated_device(session, username, device_id)
    revoked = await account_repo.revoke_device(session, device.pk, now)
    await session.commit()
    return RevokedDevice(device.pk, revoked)


async def unrevoke_device(session: AsyncSession, username: str, device_id: int) -> bool:
    """Let a revoked device log in again (its old tokens stay revoked); False when it was not
    revoked. Commits."""
    await write_lock(session)
    device = await _operated_device(session, username, device_id)
    changed = await account_repo.unrevoke_device(session, device.pk)
    await session.commit()
    return changed


@dataclass(frozen=True, slots=True)
class InviteInfo:
    """A stored invite as the operator sees it (the token itself is never stored)."""

    id: int
    uses_left: int
    expires_at: int | None
    created_at: int
    #: ``active``, ``used up`` or ``expired``.
    state: str


async def create_invite(session: AsyncSession, *, uses: int, ttl: int | None, now: int) -> str:
    """A new invite token admitting ``uses`` registrations (for ``ttl`` seconds, or for good).
    Only its hash is stored. Commits."""
    token = secrets.token_urlsafe(24)
    await write_lock(session)
    await invite_repo.add_invite(
        session,
        token_hash=hash_secret(token.encode("utf-8")),
        uses=uses,
        expires_at=None if ttl is None else now + ttl,
        now=now,
    )
    await session.commit()
    return token


async def list_invites(session: AsyncSession, *, now: int) -> list[InviteInfo]:
    """Every stored invite, oldest first, with its state at ``now``."""

    def state(uses_left: int, expires_at: int | None) -> str:
        if uses_left <= 0:
            return "used up"
        return "expired" if expires_at is not None and expires_at <= now else "active"

    return [
        InviteInfo(i.id, i.uses_left, i.expires_at, i.created_at, state(i.uses_left, i.expires_at))
        for i in await invite_repo.list_invites(session)
    ]


async def revoke_invite(session: AsyncSession, invite_id: int) -> bool:
    """Delete an invite so that it admits nobody more; False when there is none. Commits."""
    await write_lock(session)
    found = await invite_repo.delete_invite(session, invite_id)
    await session.commit()
    return found
