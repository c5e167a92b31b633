"""Registration and signed device-list updates.

A username is refused when it, or a name that looks like it (the same confusable skeleton,
``server.usernames``), is already registered.

A device list is accepted only when it parses, is signed by the stored account key, names
the account, and carries a version strictly greater than the stored one. The device set
is then *derived* from it: new ids are inserted, missing ids (or ids whose keys changed)
are deleted, which cascades to their tokens, challenges, prekeys and queued envelopes.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from server.clock import now as clock_now
from server.db.engine import write_lock
from server.db.models import Account, Device
from server.device_list import DeviceListError, SignedDeviceList, ed25519_public, parse_device_list
from server.errors import BadRequest, Conflict, Forbidden, NotFound
from server.repositories import accounts as account_repo
from server.repositories import invites as invite_repo
from server.schemas import RegisterIn
from server.services.auth import hash_secret
from server.services.prekeys import store_prekeys, validate_upload
from server.settings import RegistrationPolicy, Settings
from server.usernames import skeleton

__all__ = ["DeviceListUpdate", "account_devices", "register", "update_device_list"]


@dataclass(frozen=True, slots=True)
class DeviceListUpdate:
    """Result of a device-list update: the account, its devices, and removed device pks."""

    account: Account
    devices: list[Device]
    removed_device_pks: list[int]


def _parse_and_verify(blob: bytes, username: str, account_key: bytes) -> SignedDeviceList:
    try:
        signed = parse_device_list(blob)
        if signed.username != username:
            raise DeviceListError(f"device list is for {signed.username!r}, not {username!r}")
        signed.verify(account_key)
    except DeviceListError as exc:
        raise BadRequest(str(exc), code="invalid_device_list") from None
    return signed


async def _check_invite(session: AsyncSession, settings: Settings, invite: str | None) -> None:
    if settings.registration is RegistrationPolicy.CLOSED:
        raise Forbidden("registration is closed on this relay", code="registration_closed")
    if settings.registration is RegistrationPolicy.INVITE:
        if not invite:
            raise Forbidden("this relay requires an invite token", code="invite_required")
        if not await invite_repo.consume_invite(
            session, hash_secret(invite.encode("utf-8")), clock_now()
        ):
            raise Forbidden("invite token is unknown, used up or expired", code="invalid_invite")


async def register(session: AsyncSession, settings: Settings, req: RegisterIn) -> Device:
    """Create the account and its first device with its prekeys. Commits."""
    if settings.registration is RegistrationPolicy.CLOSED:
        raise Forbidden("registration is closed on this relay", code="registration_closed")
    try:
        ed25519_public(req.account_key)
    except DeviceListError:
        raise BadRequest(
            "account_key must be 0x02 followed by 32 bytes", code="invalid_key"
        ) from None
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
    await _check_invite(session, settings, req.invite)
    t = clock_now()
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
        raise NotFound(f"no user {username!r}", code="unknown_user")
    return account, list(await account_repo.list_devices(session, account.id))


async def update_device_list(
    session: AsyncSession, account_id: int, username: str, blob: bytes
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
    t = clock_now()
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
