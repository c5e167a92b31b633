"""Independent parser and verifier of the signed device list (format v1).

The relay never imports ``crypto/``; this is its own implementation of the byte format
fixed in the common brief (``docs/protocol-relay.md`` repeats it)::

    body   = u8 1 || str16 username || u64 list_version || u16 count (1..=16)
             || count x (u32 device_id || 33-byte X25519 identity key (0x01 || 32)
                          || 33-byte Ed25519 device auth key (0x02 || 32))   ascending ids
    signed = body || Ed25519(account_key, b"VoxDeviceList-v1" || 0x00 || body)
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from wire.weak_keys import ed25519_weakness, x25519_weakness

__all__ = [
    "DEVICE_LIST_CONTEXT",
    "MAX_DEVICES",
    "DeviceListError",
    "ListedDevice",
    "SignedDeviceList",
    "canonical_x25519",
    "ed25519_public",
    "parse_device_list",
    "verify_ed25519",
]

DEVICE_LIST_CONTEXT = b"VoxDeviceList-v1"
FORMAT_VERSION = 1
MAX_DEVICES = 16
SIGNATURE_LEN = 64
TYPE_X25519 = 0x01
TYPE_ED25519 = 0x02
_ENTRY_LEN = 4 + 33 + 33
_P25519 = 2**255 - 19
_USERNAME = re.compile(r"^[a-z0-9_.-]{3,32}$")


def canonical_x25519(typed_key: bytes) -> bool:
    """True for ``0x01 || u`` with a canonical u-coordinate (``u < 2^255 - 19``)."""
    return (
        len(typed_key) == 33
        and typed_key[0] == TYPE_X25519
        and int.from_bytes(typed_key[1:], "little") < _P25519
    )


class DeviceListError(ValueError):
    """The signed device list is malformed or its signature does not verify."""


@dataclass(frozen=True, slots=True)
class ListedDevice:
    """One entry of a device list."""

    device_id: int
    identity_key: bytes
    auth_key: bytes


@dataclass(frozen=True, slots=True)
class SignedDeviceList:
    """A parsed (not yet verified) signed device list."""

    username: str
    version: int
    devices: tuple[ListedDevice, ...]
    body: bytes
    signature: bytes

    def verify(self, account_key: bytes) -> None:
        """Check the signature with the typed account key; raise :class:`DeviceListError`."""
        message = DEVICE_LIST_CONTEXT + b"\x00" + self.body
        if not verify_ed25519(account_key, self.signature, message):
            raise DeviceListError("device list signature does not verify with the account key")


if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def ed25519_public(typed_key: bytes) -> Ed25519PublicKey:
    """Decode a type-prefixed Ed25519 public key (``0x02 || 32 bytes``)."""
    # cryptography (~8 MB resident) is loaded with the first signature check, not at start.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if len(typed_key) != 33 or typed_key[0] != TYPE_ED25519:
        raise DeviceListError("an Ed25519 key must be 0x02 followed by 32 bytes")
    if weakness := ed25519_weakness(typed_key[1:]):
        raise DeviceListError(f"the Ed25519 key is {weakness}: refused")
    try:
        return Ed25519PublicKey.from_public_bytes(typed_key[1:])
    except ValueError as exc:
        raise DeviceListError("invalid Ed25519 public key") from exc


def verify_ed25519(typed_key: bytes, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``message`` by ``typed_key``."""
    from cryptography.exceptions import InvalidSignature

    if len(signature) != SIGNATURE_LEN:
        return False
    try:
        ed25519_public(typed_key).verify(signature, message)
    except (InvalidSignature, DeviceListError):
        return False
    return True


def parse_device_list(data: bytes) -> SignedDeviceList:
    """Parse ``body || signature``; raise :class:`DeviceListError` on any malformation."""
    if len(data) < 1 + 2 + 8 + 2 + SIGNATURE_LEN:
        raise DeviceListError("device list is truncated")
    body, signature = data[:-SIGNATURE_LEN], data[-SIGNATURE_LEN:]
    if body[0] != FORMAT_VERSION:
        raise DeviceListError(f"unsupported device list format {body[0]} (expected 1)")
    (name_len,) = struct.unpack_from(">H", body, 1)
    pos = 3
    if len(body) < pos + name_len + 8 + 2:
        raise DeviceListError("device list is truncated")
    try:
        username = body[pos : pos + name_len].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DeviceListError("device list username is not UTF-8") from exc
    if not _USERNAME.match(username):
        raise DeviceListError("device list username is not a valid username")
    pos += name_len
    version, count = struct.unpack_from(">QH", body, pos)
    pos += 10
    if not 1 <= count <= MAX_DEVICES:
        raise DeviceListError(f"device list must hold 1..{MAX_DEVICES} devices, not {count}")
    if len(body) != pos + count * _ENTRY_LEN:
        raise DeviceListError("device list length does not match its device count")
    devices: list[ListedDevice] = []
    for _ in range(count):
        (device_id,) = struct.unpack_from(">I", body, pos)
        identity = body[pos + 4 : pos + 37]
        auth = body[pos + 37 : pos + 70]
        pos += _ENTRY_LEN
        if device_id < 1:
            raise DeviceListError("device ids start at 1")
        if devices and device_id <= devices[-1].device_id:
            raise DeviceListError("device ids must be unique and strictly ascending")
        if not canonical_x25519(identity):
            raise DeviceListError(
                "identity keys must be typed X25519 keys (0x01 || 32 bytes, canonical)"
            )
        if weakness := x25519_weakness(identity[1:]):
            raise DeviceListError(f"device {device_id}'s identity key is {weakness}: refused")
        if auth[0] != TYPE_ED25519:
            raise DeviceListError("device auth keys must be typed Ed25519 keys (0x02 || 32 bytes)")
        if weakness := ed25519_weakness(auth[1:]):
            raise DeviceListError(f"device {device_id}'s auth key is {weakness}: refused")
        devices.append(ListedDevice(device_id, bytes(identity), bytes(auth)))
    if version < 1:
        raise DeviceListError("device list versions start at 1")
    return SignedDeviceList(username, version, tuple(devices), bytes(body), bytes(signature))
