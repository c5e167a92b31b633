"""Prekey upload, counts and bundle claims.

The relay checks only the *shape* of prekeys (type prefix, length, 64-byte signatures);
it does not verify prekey signatures — clients verify them with the account key from the
signed device list. One-time keys are claimed oldest first, each exactly once.

One-time keys leave a device at a bounded rate (:class:`ClaimBudget`): at most
``per_target`` claims per hour by all requesters together and ``per_requester`` by one
requesting device. A claim over either budget still returns a bundle, with the signed prekey
and the last-resort ML-KEM key only (PQXDH without one-time keys), so a stranger can no
longer drain a victim's stock. The claim that uses up the target's hourly budget tells the
device (``prekeys_drain``), so that it can notice an attack (``docs/protocol-relay.md``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from server.accounts import repository as account_repo
from server.db.engine import write_lock
from server.db.models import PREKEY_KIND_MLKEM, PREKEY_KIND_X25519, Account, Device
from server.errors import BadRequest, Conflict, Gone, NotFound, PayloadTooLarge
from server.logs import log_event
from server.prekeys import repository as prekey_repo
from server.settings import LimitSettings
from wire.rest import PrekeyUpload, SignedPrekeyIn
from wire.weak_keys import x25519_weakness

__all__ = [
    "BundleEntry",
    "ClaimBudget",
    "ClaimedBundle",
    "Drained",
    "LowStock",
    "claim_bundle",
    "prekey_counts",
    "store_prekeys",
    "validate_upload",
]

X25519_LEN = 33
MLKEM_LEN = 1 + 1184
SIG_LEN = 64


@dataclass(frozen=True, slots=True)
class LowStock:
    """A device whose one-time prekey stock fell below the threshold."""

    device_pk: int
    one_time_prekeys: int
    one_time_pq_prekeys: int


@dataclass(frozen=True, slots=True)
class ClaimBudget:
    """How many claims of one device's one-time prekeys a window allows."""

    per_target: int
    per_requester: int
    window_seconds: int = 3600


@dataclass(frozen=True, slots=True)
class Drained:
    """A device whose one-time prekeys reached the per-target budget with this claim."""

    device_pk: int
    claims: int
    window_seconds: int


@dataclass(frozen=True, slots=True)
class BundleEntry:
    """One device's part of a bundle: the device row and what was claimed for it."""

    device: Device
    one_time: tuple[int, bytes, bytes] | None
    one_time_pq: tuple[int, bytes, bytes] | None
    #: One-time keys were not handed out: the claim budget was used up.
    withheld: bool = False


@dataclass(frozen=True, slots=True)
class ClaimedBundle:
    """The account and one entry per device."""

    account: Account
    entries: list[BundleEntry]
    low_stock: list[LowStock]
    drained: list[Drained]


def _check_key(what: str, key: bytes, prefix: int, length: int) -> None:
    if len(key) != length or key[0] != prefix:
        raise BadRequest(
            f"{what} must be 0x{prefix:02x} followed by {length - 1} bytes", code="invalid_key"
        )
    if prefix == 0x01 and (weakness := x25519_weakness(key[1:])):
        raise BadRequest(f"{what} is {weakness}: refused", code="invalid_key")


def _check_sig(what: str, sig: bytes) -> None:
    if len(sig) != SIG_LEN:
        raise BadRequest(f"{what} signature must be 64 bytes", code="invalid_signature")


def _check_unique(what: str, ids: Sequence[int]) -> None:
    if len(set(ids)) != len(ids):
        raise BadRequest(f"duplicate key ids in {what}", code="duplicate_key_id")


def validate_upload(upload: PrekeyUpload, limits: LimitSettings) -> None:
    """Shape and size checks of an upload (no database access)."""
    if upload.signed_prekey is not None:
        _check_key("signed_prekey.public_key", upload.signed_prekey.public_key, 0x01, X25519_LEN)
        _check_sig("signed_prekey", upload.signed_prekey.signature)
    if upload.last_resort_prekey is not None:
        key = upload.last_resort_prekey.public_key
        _check_key("last_resort_prekey.public_key", key, 0x03, MLKEM_LEN)
        _check_sig("last_resort_prekey", upload.last_resort_prekey.signature)
    for name, batch in (
        ("one_time_prekeys", upload.one_time_prekeys),
        ("one_time_pq_prekeys", upload.one_time_pq_prekeys),
    ):
        if len(batch) > limits.prekey_batch_max:
            raise PayloadTooLarge(
                f"{name}: {len(batch)} keys, at most {limits.prekey_batch_max} per request",
                code="prekey_batch_too_large",
            )
    for otk in upload.one_time_prekeys:
        _check_key("one_time_prekeys[].public_key", otk.public_key, 0x01, X25519_LEN)
    for pq in upload.one_time_pq_prekeys:
        _check_key("one_time_pq_prekeys[].public_key", pq.public_key, 0x03, MLKEM_LEN)
        _check_sig("one_time_pq_prekeys[]", pq.signature)
    _check_unique("one_time_prekeys", [k.key_id for k in upload.one_time_prekeys])
    _check_unique("one_time_pq_prekeys", [k.key_id for k in upload.one_time_pq_prekeys])


def _set_signed(device: Device, spk: SignedPrekeyIn | None, lr: SignedPrekeyIn | None) -> None:
    if spk is not None:
        device.signed_prekey_id = spk.key_id
        device.signed_prekey = spk.public_key
        device.signed_prekey_signature = spk.signature
    if lr is not None:
        device.last_resort_id = lr.key_id
        device.last_resort_key = lr.public_key
        device.last_resort_signature = lr.signature


async def store_prekeys(
    session: AsyncSession, device: Device, upload: PrekeyUpload, limits: LimitSettings
) -> None:
    """Validate and store an upload for ``device`` (no commit; caller holds the write lock)."""
    validate_upload(upload, limits)
    _set_signed(device, upload.signed_prekey, upload.last_resort_prekey)
    batches = (
        (
            PREKEY_KIND_X25519,
            "one_time_prekeys",
            [(k.key_id, k.public_key, b"") for k in upload.one_time_prekeys],
        ),
        (
            PREKEY_KIND_MLKEM,
            "one_time_pq_prekeys",
            [(k.key_id, k.public_key, k.signature) for k in upload.one_time_pq_prekeys],
        ),
    )
    for kind, name, keys in batches:
        if not keys:
            continue
        stock = await prekey_repo.count_one_time(session, device.pk, kind)
        if stock + len(keys) > limits.prekey_max_stock:
            raise Conflict(
                f"{name}: {stock} stored + {len(keys)} new exceeds the stock limit of "
                f"{limits.prekey_max_stock}",
                code="prekey_stock_full",
            )
        clash = await prekey_repo.existing_key_ids(session, device.pk, kind, [k[0] for k in keys])
        if clash:
            raise Conflict(
                f"{name}: key ids already stored: {sorted(clash)[:10]}", code="duplicate_key_id"
            )
        await prekey_repo.add_one_time(session, device.pk, kind, keys)


async def upload_prekeys(
    session: AsyncSession, device_pk: int, upload: PrekeyUpload, limits: LimitSettings
) -> None:
    """``POST /v1/prekeys`` for the authenticated device. Commits."""
    validate_upload(upload, limits)
    await write_lock(session)
    device = await session.get(Device, device_pk, with_for_update=True)
    if device is None:
        raise NotFound("device no longer exists", code="unknown_device")
    await store_prekeys(session, device, upload, limits)
    await session.commit()


async def prekey_counts(session: AsyncSession, device_pk: int) -> tuple[int, int]:
    """``(one-time X25519, one-time ML-KEM)`` keys left for the device."""
    counts = await prekey_repo.count_by_kind(session, device_pk)
    return counts.get(PREKEY_KIND_X25519, 0), counts.get(PREKEY_KIND_MLKEM, 0)


async def _claim_sound_x25519(
    session: AsyncSession, device_pk: int
) -> tuple[int, bytes, bytes] | None:
    """Claim the device's oldest one-time X25519 prekey, re-checked against
    :mod:`wire.weak_keys`: one stored before uploads were checked and found weak is deleted
    (the claim deletes it) and the next one is claimed — a comparison per claim, and the
    weak keys go as they come up instead of making bundles fail at the initiator."""
    while True:
        otk = await prekey_repo.claim_one_time(session, device_pk, PREKEY_KIND_X25519)
        if otk is None:
            return None
        key = otk[1]
        if not (len(key) == 33 and key[0] == 0x01 and x25519_weakness(key[1:])):
            return otk
        log_event("weak_prekey_discarded", logging.WARNING, device_pk=device_pk, key_id=otk[0])


async def claim_bundle(
    session: AsyncSession,
    username: str,
    device_id: int | None,
    *,
    now: int,
    low_threshold: int,
    requester_pk: int,
    budget: ClaimBudget,
) -> ClaimedBundle:
    """Claim one one-time key of each kind per device of ``username``, within the claim
    budget (past it the entry has no one-time keys). Commits."""
    await write_lock(session)
    account = await account_repo.get_account(session, username)
    if account is None:
        if await account_repo.deleted_username(session, username) is not None:
            raise Gone(f"the account {username!r} was deleted", code="account_deleted")
        raise NotFound(f"no user {username!r}", code="unknown_user")
    devices = list(await account_repo.list_devices(session, account.id))
    if device_id is not None:
        devices = [d for d in devices if d.device_id == device_id]
        if not devices:
            raise NotFound(f"no device {device_id} for user {username!r}", code="unknown_device")
    entries: list[BundleEntry] = []
    low: list[LowStock] = []
    drained: list[Drained] = []
    for device in devices:
        await prekey_repo.lock_claims(session, device.pk)
        total, mine = await prekey_repo.recent_claims(
            session, device.pk, requester_pk, now - budget.window_seconds
        )
        if total >= budget.per_target or mine >= budget.per_requester:
            entries.append(BundleEntry(device, None, None, withheld=True))  # signed + last resort
            continue
        otk = await _claim_sound_x25519(session, device.pk)
        pq = await prekey_repo.claim_one_time(session, device.pk, PREKEY_KIND_MLKEM)
        entries.append(BundleEntry(device, otk, pq))
        if otk is None and pq is None:
            continue  # nothing was handed out: nothing to count
        await prekey_repo.record_claim(session, device.pk, requester_pk, now)
        if total + 1 == budget.per_target:
            drained.append(Drained(device.pk, total + 1, budget.window_seconds))
        left = await prekey_counts(session, device.pk)
        if min(left) < low_threshold:
            low.append(LowStock(device.pk, *left))
    await session.commit()
    return ClaimedBundle(account, entries, low, drained)
