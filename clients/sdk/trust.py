"""Trust on first use for account keys, and verification of signed device lists.

The relay serves ``(account_key, signed_device_list)`` for a user. :func:`accept_device_list`
decides what we believe:

* first contact: the account key is trusted on first use (``TOFU``);
* the same key: the list must verify under it and must not roll back (crypto's rule);
* a different key: the peer is marked ``CHANGED`` (the key before the change kept for the
  warning); nothing is sent to that user (:class:`~clients.sdk.errors.UntrustedIdentity`)
  until :func:`accept_key` (``vox verify USER --accept``). Messages from the user's devices on
  the list verified under the new key are still received and shown, so nothing is lost. A
  flip *back* to a key seen before is a key change like any other.

**Rollback floors.** For every account key a list was ever accepted under, we remember the
highest list version seen under it (and a SHA-256 of that list, for crypto's "equal version
means byte-identical" rule), in the setting ``trust_floors:USERNAME``. A list below its key's
floor is refused (:class:`BadDeviceList` wrapping ``DeviceListRollback``) — also when the key
is not the current one: a relay that serves an attacker's key once and then the genuine key
with an old list (one that still names a revoked device) gets the old list refused. Floors of
keys the user trusted (first use or accepted) are kept forever; of the others (keys that
were only ever "changed"), the newest :data:`MAX_UNTRUSTED_FLOORS` are kept, so a relay
cannot grow the store without bound by serving fresh keys.

**Verification across our devices.** Accepting a key (:func:`accept_key`) on one device is
told to the account's other devices (a VERIFIED content, ``docs/protocol-client.md`` §2,
believed only from our own devices): :func:`apply_verified` marks the user ``VERIFIED`` there
if that device holds the same key; otherwise it remembers the key (setting
``verified_sync:USERNAME``) and :func:`accept_device_list` marks the user ``VERIFIED`` — not
``CHANGED`` — when a list under exactly that key arrives. Any other key still counts as a
change. The content goes through the outbox (queued while the relay is unreachable, in order,
retried). Taking a verification back (:func:`clear_verified`, ``vox verify --clear``) makes
the user ``TOFU`` again and is told the same way (state UNVERIFIED): a device holding exactly
that key and the user ``VERIFIED`` makes it ``TOFU``, and forgets a remembered key equal to it
(``apply_verified(..., verified=False)``).

Only devices on the last verified list are ever encrypted to or believed as senders.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Final

from clients.sdk.errors import BadDeviceList, UntrustedIdentity
from clients.store.base import Store
from clients.store.models import PeerIdentity, TrustState
from crypto.device_list import DeviceList, SignedDeviceList
from crypto.errors import DeviceListRollback, VoxError
from crypto.fingerprint import safety_number
from crypto.keys import Ed25519PublicKey

__all__ = [
    "MAX_UNTRUSTED_FLOORS",
    "accept_device_list",
    "accept_key",
    "apply_verified",
    "clear_verified",
    "is_trusted",
    "known_device_list",
    "peer_safety_number",
    "require_trusted",
]


#: Rollback floors kept for account keys the user never trusted (see the module docstring).
MAX_UNTRUSTED_FLOORS: Final = 32
_FLOORS: Final = "trust_floors:"
_VERIFIED_SYNC: Final = "verified_sync:"


@dataclass(slots=True)
class _Floor:
    """The highest list version accepted under one account key, that list's SHA-256 (hex),
    and whether the user ever trusted the key (first use or accepted)."""

    version: int
    digest: str
    trusted: bool


def _digest(signed_list: bytes) -> str:
    return hashlib.sha256(signed_list).hexdigest()


def _load_floors(store: Store, username: str, peer: PeerIdentity | None) -> dict[str, _Floor]:
    """Floors by account key (hex), oldest first; a store written before floors existed
    contributes the list it holds under the current key."""
    raw = store.get_setting(_FLOORS + username)
    floors = (
        {k: _Floor(int(v), str(d), bool(t)) for k, (v, d, t) in json.loads(raw).items()}
        if raw
        else {}
    )
    if peer is not None and peer.device_list is not None:
        key = peer.account_key.hex()
        if key not in floors:
            trusted = peer.trust is not TrustState.CHANGED
            floors[key] = _Floor(peer.device_list_version, _digest(peer.device_list), trusted)
    return floors


def _save_floors(store: Store, username: str, floors: dict[str, _Floor]) -> None:
    untrusted = [k for k, f in floors.items() if not f.trusted]
    for key in untrusted[: max(0, len(untrusted) - MAX_UNTRUSTED_FLOORS)]:
        del floors[key]
    value = {k: [f.version, f.digest, f.trusted] for k, f in floors.items()}
    store.set_setting(_FLOORS + username, json.dumps(value))


def _check_floor(floor: _Floor | None, version: int, signed_list: bytes) -> None:
    """Crypto's rollback rule against a remembered floor (raises ``DeviceListRollback``)."""
    if floor is None:
        return
    if version < floor.version or (
        version == floor.version and not hmac.compare_digest(floor.digest, _digest(signed_list))
    ):
        raise DeviceListRollback(floor.version, version)


@functools.lru_cache(maxsize=1024)
def _parse_list(data: bytes) -> DeviceList:
    """Decode a stored (already verified) signed list; cached, it is read on every send."""
    return SignedDeviceList.from_bytes(data).device_list


def known_device_list(store: Store, username: str) -> DeviceList | None:
    """The last verified device list of ``username`` (None if none yet)."""
    peer = store.get_peer(username)
    if peer is None or peer.device_list is None:
        return None
    return _parse_list(peer.device_list)


def is_trusted(store: Store, username: str) -> bool:
    """False while ``username``'s account key changed and was not accepted."""
    peer = store.get_peer(username)
    return peer is None or peer.trust is not TrustState.CHANGED


def require_trusted(store: Store, username: str) -> None:
    """Raise :class:`UntrustedIdentity` if sending to ``username`` is blocked."""
    if not is_trusted(store, username):
        raise UntrustedIdentity(username)


def accept_device_list(
    store: Store, username: str, account_key: bytes, signed_list: bytes, *, now: float | None = None
) -> tuple[DeviceList, bool]:
    """Verify what the relay served for ``username``; return ``(list, key_changed_now)``.

    The list must verify under the served account key and must not roll back the highest
    list ever accepted under that key (current or not: the key's rollback floor). A key
    different from the current one — new, or one seen before — marks the peer ``CHANGED``
    (sending blocked until :func:`accept_key`; receiving continues, so nothing is lost) and
    returns ``key_changed_now=True``. A list that does not verify or rolls back raises
    :class:`BadDeviceList` and changes nothing. The peer's ``updated_at`` becomes ``now``
    (when the list was last verified).
    """
    try:
        key = Ed25519PublicKey.from_bytes(account_key)
        signed = SignedDeviceList.from_bytes(signed_list)
    except VoxError as exc:
        raise BadDeviceList(username, str(exc)) from None
    peer = store.get_peer(username)
    same_key = peer is not None and hmac.compare_digest(peer.account_key, account_key)
    floors = _load_floors(store, username, peer)
    canonical = signed.to_bytes()
    try:
        device_list = signed.verify(key, username=username)
        _check_floor(floors.get(account_key.hex()), device_list.version, canonical)
    except VoxError as exc:
        raise BadDeviceList(username, str(exc)) from None
    changed_now = False
    if peer is None:
        trust, old_key = TrustState.TOFU, None
    elif same_key:
        trust, old_key = peer.trust, peer.previous_account_key
    else:
        # Any change of the served key — a new key, or a flip back to one seen before — is
        # reported and blocks sending until the user accepts the key now served.
        changed_now = True
        trust, old_key = TrustState.CHANGED, peer.account_key
    verified_elsewhere = store.get_setting(_VERIFIED_SYNC + username)
    if verified_elsewhere is not None and hmac.compare_digest(
        verified_elsewhere, account_key.hex()
    ):
        # The user verified exactly this key on another of our devices.
        changed_now = False
        trust, old_key = TrustState.VERIFIED, None
        store.set_setting(_VERIFIED_SYNC + username, None)
    known = floors.pop(account_key.hex(), None)
    floors[account_key.hex()] = _Floor(
        device_list.version,
        _digest(canonical),
        trust is not TrustState.CHANGED or (known is not None and known.trusted),
    )
    _save_floors(store, username, floors)
    store.put_peer(
        PeerIdentity(
            username,
            account_key,
            trust,
            previous_account_key=old_key,
            device_list_version=device_list.version,
            device_list=canonical,
            updated_at=time.time() if now is None else now,
        )
    )
    return device_list, changed_now


def accept_key(store: Store, username: str) -> bool:
    """Accept ``username``'s current account key (after comparing safety numbers).

    Returns True if a changed key was pending. The peer becomes ``VERIFIED`` with the key and
    device list already verified under it.
    """
    peer = store.get_peer(username)
    if peer is None:
        return False
    store.set_setting(_VERIFIED_SYNC + username, None)  # this device's own decision wins
    changed = peer.trust is TrustState.CHANGED
    floors = _load_floors(store, username, peer)
    floor = floors.get(peer.account_key.hex())
    if floor is not None:
        floor.trusted = True
        _save_floors(store, username, floors)
    store.put_peer(
        PeerIdentity(
            username,
            peer.account_key,
            TrustState.VERIFIED,
            previous_account_key=None,
            device_list_version=peer.device_list_version,
            device_list=peer.device_list,
            updated_at=time.time(),
        )
    )
    return changed


def clear_verified(store: Store, username: str) -> bool:
    """The user takes back the verification of ``username`` ("unverify"): a ``VERIFIED`` peer
    becomes ``TOFU`` (trusted on first use, as before the safety numbers were compared;
    sending continues), a verification remembered from another device is forgotten. A
    ``CHANGED`` key stays changed. Returns True if the peer was verified."""
    store.set_setting(_VERIFIED_SYNC + username, None)
    peer = store.get_peer(username)
    if peer is None or peer.trust is not TrustState.VERIFIED:
        return False
    store.put_peer(dataclasses.replace(peer, trust=TrustState.TOFU, updated_at=time.time()))
    return True


def apply_verified(
    store: Store, username: str, account_key: bytes, *, verified: bool = True
) -> bool:
    """Another of our devices verified ``username``'s ``account_key``: mark it ``VERIFIED``
    if it is the key held here (True), else remember it until a list under that key is
    accepted (False). ``verified=False`` (the other device cleared the verification of that
    key): a ``VERIFIED`` peer holding exactly that key becomes ``TOFU`` (True), and a
    remembered verification of that key is forgotten; any other key is left alone."""
    if not verified:
        remembered = store.get_setting(_VERIFIED_SYNC + username)
        if remembered is not None and hmac.compare_digest(remembered, account_key.hex()):
            store.set_setting(_VERIFIED_SYNC + username, None)
        held = store.get_peer(username)
        if held is None or not hmac.compare_digest(held.account_key, account_key):
            return False
        return clear_verified(store, username)
    peer = store.get_peer(username)
    if peer is not None and hmac.compare_digest(peer.account_key, account_key):
        if peer.trust is TrustState.VERIFIED:
            store.set_setting(_VERIFIED_SYNC + username, None)
        else:
            accept_key(store, username)
        return True
    store.set_setting(_VERIFIED_SYNC + username, account_key.hex())
    return False


def peer_safety_number(
    own_username: str, own_key: Ed25519PublicKey, username: str, account_key: bytes
) -> str:
    """The 60-digit safety number of us and a peer (12 groups of 5 digits)."""
    number = safety_number(
        own_username, own_key, username, Ed25519PublicKey.from_bytes(account_key)
    )
    return number.display()
