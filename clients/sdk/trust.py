"""Trust on first use for account keys, and verification of signed device lists.

The relay serves ``(account_key, signed_device_list)`` for a user. :func:`accept_device_list`
decides what we believe:

* first contact: the account key is trusted on first use (``TOFU``);
* the same key: the list must verify under it and must not roll back (crypto's rule);
* a different key: the peer is marked ``CHANGED`` (the old key kept for the warning); nothing
  is sent to that user (:class:`~clients.sdk.errors.UntrustedIdentity`) until
  :func:`accept_key` (``vox verify USER --accept``). Messages from the user's devices on the
  list verified under the new key are still received and shown, so nothing is lost.

Only devices on the last verified list are ever encrypted to or believed as senders.
"""

from __future__ import annotations

import functools
import hmac
import time

from clients.sdk.errors import BadDeviceList, UntrustedIdentity
from clients.store.base import Store
from clients.store.models import PeerIdentity, TrustState
from crypto.device_list import DeviceList, SignedDeviceList
from crypto.errors import VoxError
from crypto.fingerprint import safety_number
from crypto.keys import Ed25519PublicKey

__all__ = [
    "accept_device_list",
    "accept_key",
    "is_trusted",
    "known_device_list",
    "peer_safety_number",
    "require_trusted",
]


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
    store: Store, username: str, account_key: bytes, signed_list: bytes
) -> tuple[DeviceList, bool]:
    """Verify what the relay served for ``username``; return ``(list, key_changed_now)``.

    The list must verify under the served account key and must not roll back the last list
    accepted under the *same* key. A key different from the trusted one marks the peer
    ``CHANGED`` (sending blocked until :func:`accept_key`; receiving continues, so nothing is
    lost) and returns ``key_changed_now=True`` the first time. A list that does not verify
    raises :class:`BadDeviceList` and changes nothing.
    """
    try:
        key = Ed25519PublicKey.from_bytes(account_key)
        signed = SignedDeviceList.from_bytes(signed_list)
    except VoxError as exc:
        raise BadDeviceList(username, str(exc)) from None
    peer = store.get_peer(username)
    same_key = peer is not None and hmac.compare_digest(peer.account_key, account_key)
    previous = None
    if same_key and peer is not None and peer.device_list is not None:
        previous = SignedDeviceList.from_bytes(peer.device_list)
    try:
        device_list = signed.verify(key, username=username, previous=previous)
    except VoxError as exc:
        raise BadDeviceList(username, str(exc)) from None
    changed_now = False
    if peer is None:
        trust, old_key = TrustState.TOFU, None
    elif same_key:
        trust, old_key = peer.trust, peer.previous_account_key
    else:
        changed_now = peer.trust is not TrustState.CHANGED
        trust = TrustState.CHANGED
        old_key = peer.account_key if changed_now else peer.previous_account_key
    store.put_peer(
        PeerIdentity(
            username,
            account_key,
            trust,
            previous_account_key=old_key,
            device_list_version=device_list.version,
            device_list=signed.to_bytes(),
            updated_at=time.time(),
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
    changed = peer.trust is TrustState.CHANGED
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


def peer_safety_number(
    own_username: str, own_key: Ed25519PublicKey, username: str, account_key: bytes
) -> str:
    """The 60-digit safety number of us and a peer (12 groups of 5 digits)."""
    number = safety_number(
        own_username, own_key, username, Ed25519PublicKey.from_bytes(account_key)
    )
    return number.display()
