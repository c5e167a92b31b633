"""Device lists, sessions, verification and our own prekeys — features over :class:`Core`.

* :func:`refresh_devices` fetches a user's signed device list (the protocol verifies it; a
  changed account key is reported once as :class:`~clients.sdk.models.KeyChanged`);
* :func:`ensure_sessions` makes sure a send can reach every current device of some users
  (fetching stale lists and missing prekey bundles);
* :func:`verify` / :func:`accept_key` show and accept safety numbers;
* :func:`devices` / :func:`remove_device` read and shrink our own device list;
* :func:`replenish_prekeys` / :func:`rotate_signed_prekey` keep our prekeys stocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterable

from clients.sdk import identity as ids
from clients.sdk import trust
from clients.sdk.content import VerifiedContent, VerifyState
from clients.sdk.core import Core
from clients.sdk.engine import replenish_count
from clients.sdk.errors import (
    ClientError,
    MessageQueued,
    RelayRejected,
    RelayUnavailable,
    UnknownUser,
)
from clients.sdk.models import DeviceInfo, KeyChanged, Verification
from clients.sdk.protocol import DeviceBundle
from clients.store.models import GONE_PREFIX
from crypto.errors import VoxError
from crypto.keys import validate_username
from wire.rest import AccountDevices, BundleDevice, PrekeyUpload

log = logging.getLogger("vox.client")

__all__ = [
    "accept_key",
    "check_user",
    "clear_verification",
    "device_bundle",
    "devices",
    "ensure_sessions",
    "maintain",
    "prune_seen",
    "refresh_devices",
    "remove_device",
    "replenish_prekeys",
    "rotate_signed_prekey",
    "safety_number",
    "verify",
]


def check_user(username: str) -> None:
    """Raise :class:`UnknownUser` for a name that cannot be a username."""
    try:
        validate_username(username)
    except VoxError:
        raise UnknownUser(username) from None


def _accept(core: Core, username: str, answer: AccountDevices) -> bool:
    _, changed = core.protocol.accept_device_list_changed(
        username, answer.account_key, answer.device_list
    )
    return changed


async def refresh_devices(core: Core, username: str) -> None:
    """Fetch and verify ``username``'s device list; report a changed key (once)."""
    answer = await core.http.devices(username)
    core.engine.list_checked(username, time.monotonic())
    if _accept(core, username, answer) and core.engine.report_key_change(username):
        number = safety_number(core, username)
        await core.emit([KeyChanged(username, number, int(time.time() * 1000))])


async def ensure_sessions(core: Core, usernames: Iterable[str], *, refresh: bool = False) -> None:
    """Sessions with every current device of ``usernames`` (lists refreshed when due)."""
    names = sorted(set(usernames))
    now = time.monotonic()
    for username in names:
        known = core.protocol.device_list(username) is not None
        if core.engine.list_due(username, now, known=known, refresh=refresh):
            await refresh_devices(core, username)
    for username, device_ids in core.protocol.missing_sessions(names).items():
        for device_id in device_ids:
            bundle = await core.http.bundle(username, device_id)
            core.protocol.accept_device_list_changed(
                username, bundle.account_key, bundle.device_list
            )
            for entry in bundle.devices:
                if entry.device_id != device_id:
                    continue
                parsed = device_bundle(entry)
                if parsed is None:
                    raise RelayRejected(
                        409, "no_prekeys", f"{username}:{device_id} has no prekeys yet"
                    )
                try:
                    core.protocol.accept_bundle(username, bundle.account_key, parsed)
                except VoxError as exc:
                    raise RelayRejected(
                        409, "bad_bundle", f"{username}:{device_id}: {exc}"
                    ) from None


def device_bundle(entry: BundleDevice) -> DeviceBundle | None:
    """The protocol's view of one bundle entry (``None`` without signed prekeys)."""
    spk, lr = entry.signed_prekey, entry.last_resort_prekey
    if spk is None or lr is None:
        return None
    otk, otpq = entry.one_time_prekey, entry.one_time_pq_prekey
    return DeviceBundle(
        device_id=entry.device_id,
        identity_key=entry.identity_key,
        signed_prekey=(spk.key_id, spk.public_key, spk.signature),
        last_resort_prekey=(lr.key_id, lr.public_key, lr.signature),
        one_time_prekey=(otk.key_id, otk.public_key) if otk else None,
        one_time_pq_prekey=(otpq.key_id, otpq.public_key, otpq.signature) if otpq else None,
    )


# --- verification ------------------------------------------------------------------------


def safety_number(core: Core, username: str) -> str:
    """The safety number of us and ``username`` (whose key we must know)."""
    peer = core.store.get_peer(username)
    if peer is None:
        raise UnknownUser(username)
    return trust.peer_safety_number(
        core.username, core.identity.account_key.public_key, username, peer.account_key
    )


async def verify(core: Core, username: str) -> Verification:
    """Fetch ``username``'s key (TOFU on first contact) and show the safety number."""
    check_user(username)
    with contextlib.suppress(RelayUnavailable):
        await refresh_devices(core, username)
    peer = core.store.get_peer(username)
    if peer is None:
        raise UnknownUser(username)
    return Verification(
        username,
        safety_number(core, username),
        key_changed=peer.trust == "changed",
        verified=peer.trust == "verified",
    )


async def accept_key(core: Core, username: str) -> Verification:
    """Accept ``username``'s current account key (after comparing safety numbers); our other
    devices are told through the outbox (:func:`_tell_own_devices`)."""
    check_user(username)
    with contextlib.suppress(RelayUnavailable):
        await refresh_devices(core, username)
    peer = core.store.get_peer(username)
    if peer is None:
        raise UnknownUser(username)
    accepted = functools.partial(trust.accept_key, core.store, username)
    await _tell_own_devices(core, username, peer.account_key, VerifyState.VERIFIED, accepted)
    core.engine.key_accepted(username)
    return await verify(core, username)


async def clear_verification(core: Core, username: str) -> Verification:
    """Take back the verification of ``username`` ("unverify", e.g. accepted by mistake): the
    user is trusted on first use again, on this device and — through the outbox — on our
    other devices. A changed key stays changed (sending to it stays blocked)."""
    check_user(username)
    peer = core.store.get_peer(username)
    if peer is None:
        raise UnknownUser(username)
    cleared = functools.partial(trust.clear_verified, core.store, username)
    await _tell_own_devices(core, username, peer.account_key, VerifyState.UNVERIFIED, cleared)
    return await verify(core, username)


async def _tell_own_devices(
    core: Core, username: str, account_key: bytes, state: VerifyState, local: Callable[[], object]
) -> None:
    """Apply ``local`` (the trust change here) and queue the VERIFIED content telling our
    other devices, in one transaction; it goes out like a message — in order with the other
    syncs, retried, kept while the relay is unreachable (:class:`MessageQueued` is not an
    error here: the change is made on this device, the others hear it once the relay takes
    it; ``VoxClient.operations()`` lists it meanwhile)."""
    content = VerifiedContent(
        username=username, account_key=account_key, state=state,
        sent_at_ms=int(time.time() * 1000),
    )  # fmt: skip
    try:
        await core.outbox.send(username, content, local=local)
    except MessageQueued:
        log.info("telling our other devices about %s is queued", username)
    except ClientError as exc:  # refused for good: listed as not sent (operations())
        log.warning("could not tell our other devices about verifying %s: %s", username, exc)


# --- our own devices -----------------------------------------------------------------------


async def devices(core: Core) -> list[DeviceInfo]:
    """This account's devices, from its signed device list (refreshed from the relay)."""
    with contextlib.suppress(RelayUnavailable):
        await refresh_devices(core, core.username)
    device_list = core.protocol.device_list(core.username)
    if device_list is None:
        return []
    return [
        DeviceInfo(d.device_id, d.identity_key.raw.hex(), d.device_id == core.device_id)
        for d in device_list.devices
    ]


async def remove_device(core: Core, device_id: int) -> None:
    """Remove a device from the account's signed device list."""
    await refresh_devices(core, core.username)
    current = core.protocol.device_list(core.username)
    if current is None or device_id not in current.device_ids:
        raise ClientError(f"device {device_id} is not on the device list")
    if device_id == core.device_id:
        raise ClientError("a device cannot remove itself")
    signed = current.remove_device(device_id).sign(core.identity.account_key)
    answer = await core.http.put_devices(core.username, signed.to_bytes())
    core.protocol.accept_device_list(core.username, answer.account_key, answer.device_list)


# --- our prekeys ---------------------------------------------------------------------------


async def replenish_prekeys(core: Core) -> int:
    """Upload one-time prekeys when the relay's stock is low; returns how many."""
    count = replenish_count(await core.http.prekey_count(), ids.DEFAULT_BATCH)
    if count == 0:
        return 0
    with core.store.transaction():
        upload = ids.one_time_batch(core.store, core.identity, count)
    await core.http.upload_prekeys(PrekeyUpload.model_validate(upload))
    return count


SEEN_MARGIN_S = 86400.0


async def prune_seen(core: Core) -> int:
    """Forget processed envelope ids (``env:``) the relay can no longer redeliver, and the
    tombstones of messages removed here (``gone:``, :meth:`~clients.store.base.MessageStore.
    forget_message`: no copy of them can arrive any more either): older than its envelope TTL
    (from ``/v1/config``; a year when unknown) plus a day. Other ids in the table (``pqxdh:``
    replay guards) are kept here: they go with the signed prekey they name, or the old
    unnamed ones once older than every signed prekey held
    (:func:`clients.sdk.identity.rotate_signed_prekey`)."""
    ttl = 365 * 86400.0
    with contextlib.suppress(ClientError):
        ttl = (await core.config()).limits.get("envelope_ttl_seconds", ttl)
    cutoff = time.time() - ttl - SEEN_MARGIN_S
    with core.store.transaction():
        return core.store.prune_seen(cutoff, prefix="env:") + core.store.prune_seen(
            cutoff, prefix=GONE_PREFIX
        )


async def rotate_signed_prekey(core: Core, *, force: bool = False) -> bool:
    """Rotate the signed prekey when it is older than a week (or ``force``)."""
    if not force and not ids.signed_prekey_due(core.store, time.time()):
        return False
    with core.store.transaction():
        upload = ids.rotate_signed_prekey(core.store, core.identity)
    await core.http.upload_prekeys(PrekeyUpload.model_validate(upload))
    return True


async def maintain(core: Core, interval: Callable[[], float]) -> None:
    """The maintenance task: prekey stock, signed prekey rotation, pruning the seen table;
    then sleep ``interval()`` seconds. A failed round is logged and retried next time."""
    while True:
        for work in (replenish_prekeys, rotate_signed_prekey, prune_seen):
            try:
                await work(core)
            except ClientError as exc:
                log.info("maintenance: %s failed: %s", work.__name__, exc)
        await asyncio.sleep(interval())
