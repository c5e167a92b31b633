"""The account-signed device list: which devices belong to an account.

Byte format (fixed cross-team contract; the relay verifies it independently)::

    body   = u8 1 (format version)
             || str16 username                      (u16 length || UTF-8, ^[a-z0-9_.-]{3,32}$)
             || u64 list_version                    (>= 1, strictly increasing)
             || u16 count                           (1 ..= 16)
             || count x ( u32 device_id             (>= 1, strictly ascending)
                          || 33-byte typed X25519 identity key   (0x01 || 32)
                          || 33-byte typed Ed25519 device auth key (0x02 || 32) )
    signature = Ed25519(account_key, b"VoxDeviceList-v1" || 0x00 || body)
    signed_device_list = body || signature (64 bytes)

Acceptance rule on a client (:meth:`SignedDeviceList.verify`): the signature verifies under
the account key, the list names the expected account, and its version is strictly greater
than the version previously accepted for that account -- or equal to it *and* byte-identical
to the accepted list (a harmless re-fetch). An equal version with different bytes is an
equivocation and is refused like a rollback. The relay is stricter on upload: it accepts only a
strictly greater version.
"""

from __future__ import annotations

import hmac
import itertools
from dataclasses import dataclass, field
from typing import Final

from crypto.encoding import Reader, Writer
from crypto.errors import (
    DeviceListAccountMismatch,
    DeviceListRollback,
    FieldTooLarge,
    InvalidValue,
    Truncated,
    UnknownDevice,
)
from crypto.keys import (
    AccountKey,
    Ed25519PublicKey,
    X25519PublicKey,
    validate_username,
)

__all__ = [
    "DEVICE_LIST_LABEL",
    "MAX_DEVICES",
    "DeviceEntry",
    "DeviceList",
    "SignedDeviceList",
]

DEVICE_LIST_LABEL: Final = b"VoxDeviceList-v1"
FORMAT_VERSION: Final = 1
MAX_DEVICES: Final = 16
MAX_LIST_VERSION: Final = 2**64 - 1
SIGNATURE_LEN: Final = 64
ENTRY_LEN: Final = 4 + 33 + 33


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    """One device on the list: its id, X25519 identity key and Ed25519 relay-auth key."""

    device_id: int
    identity_key: X25519PublicKey
    auth_key: Ed25519PublicKey

    def __post_init__(self) -> None:
        if not 1 <= self.device_id <= 0xFFFFFFFF:
            raise InvalidValue("device_id", "must be a u32 >= 1")

    def _write(self, w: Writer) -> None:
        w.u32(self.device_id).raw(self.identity_key.to_bytes()).raw(self.auth_key.to_bytes())

    @classmethod
    def _read(cls, r: Reader) -> DeviceEntry:
        device_id = r.u32()
        if device_id == 0:
            raise InvalidValue("device_id", "device ids start at 1")
        return cls(device_id, X25519PublicKey.read(r), Ed25519PublicKey.read(r))


@dataclass(frozen=True, slots=True)
class DeviceList:
    """An account's device set at one ``version`` (unsigned; see :meth:`sign`)."""

    username: str
    version: int
    devices: tuple[DeviceEntry, ...]

    def __post_init__(self) -> None:
        validate_username(self.username)
        if not 1 <= self.version <= MAX_LIST_VERSION:
            raise InvalidValue("list_version", "must be a u64 >= 1")
        if len(self.devices) > MAX_DEVICES:
            raise FieldTooLarge("devices", len(self.devices), MAX_DEVICES)
        if not self.devices:
            raise InvalidValue("devices", "a device list names at least one device")
        ids = [d.device_id for d in self.devices]
        if any(a >= b for a, b in itertools.pairwise(ids)):
            raise InvalidValue("device_id", "device ids must be unique and strictly ascending")

    @classmethod
    def first(cls, username: str, device: DeviceEntry) -> DeviceList:
        """The first list of a new account: version 1 with one device."""
        return cls(username, 1, (device,))

    @property
    def device_ids(self) -> tuple[int, ...]:
        """The device ids, ascending."""
        return tuple(d.device_id for d in self.devices)

    def lookup(self, device_id: int) -> DeviceEntry:
        """Return the entry for ``device_id``; raise :class:`~crypto.errors.UnknownDevice`."""
        for entry in self.devices:
            if entry.device_id == device_id:
                return entry
        raise UnknownDevice(device_id)

    def check_device(self, device_id: int, identity_key: X25519PublicKey) -> DeviceEntry:
        """Require ``device_id`` on the list *with* this identity key (else ``UnknownDevice``)."""
        entry = self.lookup(device_id)
        if not hmac.compare_digest(entry.identity_key.to_bytes(), identity_key.to_bytes()):
            raise UnknownDevice(device_id)
        return entry

    def add_device(self, entry: DeviceEntry) -> DeviceList:
        """A new list (``version + 1``) that also names ``entry``."""
        if entry.device_id in self.device_ids:
            raise InvalidValue("device_id", f"device {entry.device_id} is already on the list")
        devices = tuple(sorted((*self.devices, entry), key=lambda d: d.device_id))
        return DeviceList(self.username, self.version + 1, devices)

    def remove_device(self, device_id: int) -> DeviceList:
        """A new list (``version + 1``) without ``device_id`` (``UnknownDevice`` if absent)."""
        self.lookup(device_id)
        devices = tuple(d for d in self.devices if d.device_id != device_id)
        return DeviceList(self.username, self.version + 1, devices)

    def to_bytes(self) -> bytes:
        """The signed ``body`` (see the module docstring)."""
        w = Writer().u8(FORMAT_VERSION).str16(self.username).u64(self.version)
        w.u16(len(self.devices))
        for entry in self.devices:
            entry._write(w)
        return w.finish()

    @classmethod
    def _read(cls, r: Reader) -> DeviceList:
        r.version(FORMAT_VERSION)
        username = validate_username(r.str16("username", 32))
        version = r.u64()
        if version == 0:
            raise InvalidValue("list_version", "the first list has version 1")
        count = r.count("devices", MAX_DEVICES)
        if count == 0:
            raise InvalidValue("devices", "a device list names at least one device")
        if r.remaining < count * ENTRY_LEN:
            raise Truncated(count * ENTRY_LEN, r.remaining)
        devices = tuple(DeviceEntry._read(r) for _ in range(count))
        return cls(username, version, devices)

    @classmethod
    def from_bytes(cls, body: bytes) -> DeviceList:
        """Decode an unsigned ``body``; raises only :class:`~crypto.errors.DecodeError`."""
        r = Reader(body)
        out = cls._read(r)
        r.end()
        return out

    def sign(self, account_key: AccountKey) -> SignedDeviceList:
        """Sign the list with the account key."""
        body = self.to_bytes()
        return SignedDeviceList(body, account_key.sign(DEVICE_LIST_LABEL, body), self)


@dataclass(frozen=True, slots=True)
class SignedDeviceList:
    """``body || signature``: what the relay stores and serves. Decode, then :meth:`verify`."""

    body: bytes
    signature: bytes = field(repr=False)
    device_list: DeviceList = field(compare=False)

    def to_bytes(self) -> bytes:
        """``body || signature`` exactly as signed."""
        return self.body + self.signature

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedDeviceList:
        """Parse (without verifying); raises only :class:`~crypto.errors.DecodeError`."""
        r = Reader(data)
        device_list = DeviceList._read(r)
        body_len = len(data) - r.remaining
        signature = r.raw(SIGNATURE_LEN)
        r.end()
        return cls(bytes(data[:body_len]), signature, device_list)

    @property
    def version(self) -> int:
        """The list version."""
        return self.device_list.version

    def verify(
        self,
        account_key: Ed25519PublicKey,
        *,
        username: str,
        previous: SignedDeviceList | None = None,
        min_version: int = 1,
    ) -> DeviceList:
        """Check signature, account and rollback; return the verified :class:`DeviceList`.

        ``previous`` is the list last accepted for this account (``None`` on first contact).
        ``min_version`` additionally requires ``list_version >= min_version`` (for callers that
        keep only a version number; the relay's rule is ``min_version = stored + 1``).
        Raises :class:`~crypto.errors.BadSignature`,
        :class:`~crypto.errors.DeviceListAccountMismatch` or
        :class:`~crypto.errors.DeviceListRollback` (older version, or the same version with
        different bytes).
        """
        account_key.verify(DEVICE_LIST_LABEL, self.body, self.signature, "device list")
        if self.device_list.username != username:
            raise DeviceListAccountMismatch(username, self.device_list.username)
        if self.version < min_version:
            raise DeviceListRollback(min_version - 1, self.version)
        if previous is not None:
            seen = previous.version
            if self.version < seen:
                raise DeviceListRollback(seen, self.version)
            if self.version == seen and not hmac.compare_digest(
                self.to_bytes(), previous.to_bytes()
            ):
                raise DeviceListRollback(seen, self.version)
        return self.device_list
