"""This device's keys: registration material, prekey batches and signed-prekey rotation.

The signed X25519 prekey and the last-resort ML-KEM-768 prekey are rotated together, on one
schedule (:func:`prekeys_due`, :func:`rotate_signed_prekey`): each is replaced when the newest
is older than :data:`SIGNED_PREKEY_MAX_AGE_S`, and a replaced key's private half is kept until
:data:`SIGNED_PREKEY_GRACE_S` after its successor was made (an initiator may have fetched it
just before), then deleted at the next rotation — so a compromise of the device reveals
neither the X25519 nor the post-quantum secret of sessions begun on keys that old.

Sans-I/O: functions take the store and return what to upload (``PrekeyUpload``, a plain
JSON-able dict in the relay's ``POST /v1/prekeys`` shape); the shell uploads it and only then
is the material considered published. Private halves go to the store first, so a crash
after the upload never leaves the relay serving a prekey we cannot use.
"""

from __future__ import annotations

import base64
import itertools
import math
import time
from dataclasses import dataclass
from typing import Any, Final

from clients.store.base import Store
from clients.store.models import PrekeyKind, PrekeyRecord, Profile
from crypto.device_list import DeviceEntry, DeviceList, SignedDeviceList
from crypto.envelope import PqxdhPrefix
from crypto.keys import (
    AccountKey,
    DeviceAddress,
    DeviceAuthKey,
    DeviceIdentityKey,
    KemPrekey,
    OneTimePrekey,
    SignedPrekey,
)
from crypto.pqxdh import ConsumedPrekeys, LocalDevice, PrekeySecrets

__all__ = [
    "DEFAULT_BATCH",
    "LAST_RESORT_ID_BASE",
    "REPLAY_GUARD_CLOCK_MARGIN_S",
    "SIGNED_PREKEY_GRACE_S",
    "SIGNED_PREKEY_MAX_AGE_S",
    "LocalIdentity",
    "b64",
    "consume_prekeys",
    "first_device_list",
    "new_identity",
    "one_time_batch",
    "prekey_secrets_for",
    "prekeys_due",
    "registration_prekeys",
    "rotate_signed_prekey",
    "signed_prekey_due",
]

DEFAULT_BATCH: Final = 50
#: Last-resort ML-KEM prekey ids live above this base so that they never collide with
#: one-time ML-KEM prekey ids (an initial message names a KEM prekey id without its kind).
LAST_RESORT_ID_BASE: Final = 0x8000_0000
#: Rotate the signed prekey and the last-resort ML-KEM prekey after a week; keep a replaced
#: one for 2 weeks after its replacement for late initiators.
SIGNED_PREKEY_MAX_AGE_S: Final = 7 * 24 * 3600
SIGNED_PREKEY_GRACE_S: Final = 14 * 24 * 3600
#: A replay guard of the old name (``pqxdh:<hex>``, no key id) goes once it was written this
#: long before every signed prekey still held was made (room for a clock set back).
REPLAY_GUARD_CLOCK_MARGIN_S: Final = 24 * 3600


def b64(data: bytes) -> str:
    """Standard base64 with padding (the relay's binary encoding)."""
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True, slots=True)
class LocalIdentity:
    """The deserialized keys of this device (built from the store's :class:`Profile`)."""

    address: DeviceAddress
    account_key: AccountKey
    identity_key: DeviceIdentityKey
    auth_key: DeviceAuthKey

    @classmethod
    def from_profile(cls, profile: Profile) -> LocalIdentity:
        """Decode the private keys kept in the profile."""
        return cls(
            DeviceAddress(profile.username, profile.device_id),
            AccountKey.from_bytes(profile.account_key),
            DeviceIdentityKey.from_bytes(profile.identity_key),
            DeviceAuthKey.from_bytes(profile.auth_key),
        )

    @property
    def username(self) -> str:
        """Our username."""
        return self.address.username

    @property
    def device_id(self) -> int:
        """Our device id."""
        return self.address.device_id

    @property
    def local(self) -> LocalDevice:
        """The crypto core's view of this device."""
        return LocalDevice(self.address, self.account_key.public_key, self.identity_key)

    def entry(self) -> DeviceEntry:
        """Our entry on the account's device list."""
        return DeviceEntry(self.device_id, self.identity_key.public_key, self.auth_key.public_key)

    def to_profile(self, server_url: str) -> Profile:
        """Serialize for the store."""
        return Profile(
            server_url=server_url,
            username=self.username,
            device_id=self.device_id,
            account_key=self.account_key.to_bytes(),
            identity_key=self.identity_key.to_bytes(),
            auth_key=self.auth_key.to_bytes(),
            created_at=time.time(),
        )


def new_identity(username: str, device_id: int, account_key: AccountKey | None) -> LocalIdentity:
    """Fresh device keys (and a fresh account key unless one is handed over by linking)."""
    return LocalIdentity(
        DeviceAddress(username, device_id),
        account_key or AccountKey.generate(),
        DeviceIdentityKey.generate(),
        DeviceAuthKey.generate(),
    )


def first_device_list(identity: LocalIdentity) -> SignedDeviceList:
    """Version 1 of a new account's device list, naming only this device."""
    return DeviceList.first(identity.username, identity.entry()).sign(identity.account_key)


def _signed_json(key_id: int, public: bytes, signature: bytes) -> dict[str, Any]:
    return {"key_id": key_id, "public_key": b64(public), "signature": b64(signature)}


def one_time_batch(store: Store, identity: LocalIdentity, count: int) -> dict[str, Any]:
    """Generate ``count`` one-time X25519 and ML-KEM prekeys, store them, return the upload."""
    x_start = store.next_prekey_id(PrekeyKind.ONE_TIME_X25519)
    k_start = store.next_prekey_id(PrekeyKind.ONE_TIME_KEM)
    now = time.time()
    records: list[PrekeyRecord] = []
    ones: list[dict[str, Any]] = []
    kems: list[dict[str, Any]] = []
    ik = identity.identity_key.public_key
    for i in range(count):
        otk = OneTimePrekey.generate(x_start + i)
        records.append(PrekeyRecord(PrekeyKind.ONE_TIME_X25519, otk.key_id, otk.to_bytes(), now))
        ones.append({"key_id": otk.key_id, "public_key": b64(otk.public_key.to_bytes())})
        kem = KemPrekey.generate(k_start + i, identity.account_key, ik, last_resort=False)
        records.append(PrekeyRecord(PrekeyKind.ONE_TIME_KEM, kem.key_id, kem.to_bytes(), now))
        kems.append(_signed_json(kem.key_id, kem.public_key.to_bytes(), kem.signature))
    store.put_prekeys(records)
    return {"one_time_prekeys": ones, "one_time_pq_prekeys": kems}


def _prune_replaced(store: Store, kind: PrekeyKind, now: float) -> None:
    """Delete keys of ``kind`` whose successor was made more than the grace period ago; with a
    signed prekey, the replay guards naming it (a replay now fails: the key is gone).

    Guards written before the key id was part of their name (``pqxdh:<hex>``) name no key:
    they go once written before every signed prekey still held was made (a guard's key was
    made before the initial message it guards was accepted, so that key is gone too), with
    :data:`REPLAY_GUARD_CLOCK_MARGIN_S` for a clock set back. One more statement, only in
    the rotation that deletes a key (weekly)."""
    records = sorted(store.list_prekeys(kind), key=lambda r: (r.created_at, r.key_id))
    deleted = False
    for old, successor in itertools.pairwise(records):
        if successor.created_at < now - SIGNED_PREKEY_GRACE_S:
            store.delete_prekey(kind, old.key_id)
            deleted = True
            if kind is PrekeyKind.SIGNED:
                store.prune_seen(math.inf, prefix=f"pqxdh:{old.key_id}:")
    if deleted and kind is PrekeyKind.SIGNED:
        held = min(r.created_at for r in store.list_prekeys(kind))
        store.prune_seen(held - REPLAY_GUARD_CLOCK_MARGIN_S, prefix="pqxdh:")


def _new_last_resort(store: Store, identity: LocalIdentity, now: float) -> dict[str, Any]:
    key_id = store.next_prekey_id(PrekeyKind.LAST_RESORT_KEM)
    key_id = key_id if key_id >= LAST_RESORT_ID_BASE else LAST_RESORT_ID_BASE + key_id
    kem = KemPrekey.generate(
        key_id, identity.account_key, identity.identity_key.public_key, last_resort=True
    )
    store.put_prekeys([PrekeyRecord(PrekeyKind.LAST_RESORT_KEM, key_id, kem.to_bytes(), now)])
    return _signed_json(key_id, kem.public_key.to_bytes(), kem.signature)


def rotate_signed_prekey(
    store: Store, identity: LocalIdentity, now: float | None = None
) -> dict[str, Any]:
    """A new signed X25519 prekey **and** a new last-resort ML-KEM prekey (stored), returned
    as one upload; keys replaced more than the grace period ago are deleted."""
    when = time.time() if now is None else now
    key_id = store.next_prekey_id(PrekeyKind.SIGNED)
    spk = SignedPrekey.generate(key_id, identity.account_key, identity.identity_key.public_key)
    store.put_prekeys([PrekeyRecord(PrekeyKind.SIGNED, key_id, spk.to_bytes(), when)])
    upload = {"signed_prekey": _signed_json(key_id, spk.public_key.to_bytes(), spk.signature)}
    upload["last_resort_prekey"] = _new_last_resort(store, identity, when)
    for kind in (PrekeyKind.SIGNED, PrekeyKind.LAST_RESORT_KEM):
        _prune_replaced(store, kind, when)
    return upload


def prekeys_due(store: Store, now: float, max_age: float = SIGNED_PREKEY_MAX_AGE_S) -> bool:
    """True when the newest signed prekey or the newest last-resort ML-KEM prekey is older
    than ``max_age`` seconds (or missing): time for :func:`rotate_signed_prekey`."""
    for kind in (PrekeyKind.SIGNED, PrekeyKind.LAST_RESORT_KEM):
        records = store.list_prekeys(kind)
        if not records or max(r.created_at for r in records) < now - max_age:
            return True
    return False


#: The name the shell calls (both keys are rotated together).
signed_prekey_due = prekeys_due


def registration_prekeys(
    store: Store, identity: LocalIdentity, batch: int = DEFAULT_BATCH
) -> dict[str, Any]:
    """Signed prekey, last-resort ML-KEM prekey and a batch of one-time prekeys."""
    upload = rotate_signed_prekey(store, identity)
    upload.update(one_time_batch(store, identity, batch))
    return upload


def prekey_secrets_for(store: Store, prefix: PqxdhPrefix) -> PrekeySecrets:
    """The private prekeys an initial message names (those we still hold)."""
    signed: dict[int, SignedPrekey] = {}
    kem: dict[int, KemPrekey] = {}
    one_time: dict[int, OneTimePrekey] = {}
    record = store.get_prekey(PrekeyKind.SIGNED, prefix.signed_prekey_id)
    if record is not None:
        signed[record.key_id] = SignedPrekey.from_bytes(record.secret)
    kind = (
        PrekeyKind.LAST_RESORT_KEM
        if prefix.kem_prekey_id >= LAST_RESORT_ID_BASE
        else PrekeyKind.ONE_TIME_KEM
    )
    record = store.get_prekey(kind, prefix.kem_prekey_id)
    if record is not None:
        kem[record.key_id] = KemPrekey.from_bytes(record.secret)
    if prefix.one_time_prekey_id is not None:
        record = store.get_prekey(PrekeyKind.ONE_TIME_X25519, prefix.one_time_prekey_id)
        if record is not None:
            one_time[record.key_id] = OneTimePrekey.from_bytes(record.secret)
    return PrekeySecrets(signed, kem, one_time)


def consume_prekeys(store: Store, consumed: ConsumedPrekeys) -> None:
    """Delete the one-time prekeys an accepted initial message used up."""
    if consumed.one_time_prekey_id is not None:
        store.delete_prekey(PrekeyKind.ONE_TIME_X25519, consumed.one_time_prekey_id)
    if consumed.kem_prekey_id is not None:
        store.delete_prekey(PrekeyKind.ONE_TIME_KEM, consumed.kem_prekey_id)
