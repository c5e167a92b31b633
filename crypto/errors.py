"""The one error tree of ``crypto/``.

Every failure the protocol core reports is a :class:`VoxError`; callers may catch the
branch they care about. Exceptions raised by ``cryptography`` are translated at one
boundary (:mod:`crypto.primitives`) and never escape as such.

::

    VoxError
    ├── DecodeError                      malformed bytes (wire or state)
    │   ├── UnsupportedVersion(expected, got)
    │   ├── Truncated(needed, available)
    │   ├── TrailingBytes(count)
    │   ├── FieldTooLarge(field, size, limit)
    │   └── InvalidValue(field, reason)
    │       └── WeakPublicKey(field, reason)  small-order / non-canonical Ed25519 key
    ├── DecryptionError                  authenticated decryption failed
    │   ├── AuthenticationFailed         AEAD tag / MAC / signature over ciphertext
    │   ├── DuplicateMessage(chain, index)
    │   ├── TooManySkipped(requested, limit)
    │   ├── SenderMismatch(expected, got)
    │   ├── UnknownSenderKey(key_id)     group message under a sender key we do not hold
    │   └── AttachmentMismatch(field)    attachment digest / size / chunk size != pointer
    ├── KeyAgreementError                PQXDH / DH failures
    │   ├── InvalidPublicKey(reason)     low-order point, all-zero shared secret, bad encoding
    │   ├── BadSignature(what)           a signature in a bundle or list does not verify
    │   └── UnknownPrekey(kind, key_id)  responder no longer holds the named prekey
    ├── DeviceListError
    │   ├── DeviceListRollback(seen, got)
    │   ├── DeviceListAccountMismatch(expected, got)
    │   └── UnknownDevice(device_id)
    └── StateError                       the caller drove the state machine wrongly
"""

from __future__ import annotations

__all__ = [
    "AttachmentMismatch",
    "AuthenticationFailed",
    "BadSignature",
    "DecodeError",
    "DecryptionError",
    "DeviceListAccountMismatch",
    "DeviceListError",
    "DeviceListRollback",
    "DuplicateMessage",
    "FieldTooLarge",
    "InvalidPublicKey",
    "InvalidValue",
    "KeyAgreementError",
    "SenderMismatch",
    "StateError",
    "TooManySkipped",
    "TrailingBytes",
    "Truncated",
    "UnknownDevice",
    "UnknownPrekey",
    "UnknownSenderKey",
    "UnsupportedVersion",
    "VoxError",
    "WeakPublicKey",
]


class VoxError(Exception):
    """Base of every error raised by the Vox protocol core."""


# --- decoding -------------------------------------------------------------------------


class DecodeError(VoxError):
    """Bytes that are not a valid encoding of the expected structure."""


class UnsupportedVersion(DecodeError):
    """A leading version byte this implementation does not speak."""

    def __init__(self, expected: int, got: int) -> None:
        super().__init__(f"unsupported version {got} (expected {expected})")
        self.expected = expected
        self.got = got


class Truncated(DecodeError):
    """The input ended before the structure did."""

    def __init__(self, needed: int, available: int) -> None:
        super().__init__(f"truncated input: needed {needed} bytes, {available} available")
        self.needed = needed
        self.available = available


class TrailingBytes(DecodeError):
    """Bytes left over after a complete structure."""

    def __init__(self, count: int) -> None:
        super().__init__(f"{count} trailing bytes after the structure")
        self.count = count


class FieldTooLarge(DecodeError):
    """A length-prefixed field or a count exceeds its documented limit."""

    def __init__(self, field: str, size: int, limit: int) -> None:
        super().__init__(f"{field}: {size} exceeds the limit of {limit}")
        self.field = field
        self.size = size
        self.limit = limit


class InvalidValue(DecodeError):
    """A field decoded but holds a value the protocol does not allow."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class WeakPublicKey(InvalidValue):
    """An Ed25519 public key that is a small-order point or a non-canonical encoding.

    Such a key would let anyone forge signatures under it (with the identity point as the
    key, the signature ``R = identity, S = 0`` verifies every message), so Vox refuses it
    wherever a key enters: typed key construction and decoding, and verification.
    """


# --- decryption -----------------------------------------------------------------------


class DecryptionError(VoxError):
    """A ciphertext could not be accepted; the session state is unchanged."""


class AuthenticationFailed(DecryptionError):
    """An AEAD tag, MAC or signature over a message did not verify."""


class DuplicateMessage(DecryptionError):
    """The message key for this (chain, index) was already used: a replay."""

    def __init__(self, chain: bytes, index: int) -> None:
        super().__init__(f"message {index} of this chain was already received")
        self.chain = chain
        self.index = index


class TooManySkipped(DecryptionError):
    """Accepting the message would skip more message keys than allowed."""

    def __init__(self, requested: int, limit: int) -> None:
        super().__init__(f"would skip {requested} message keys (limit {limit})")
        self.requested = requested
        self.limit = limit


class SenderMismatch(DecryptionError):
    """The sender identity inside the ciphertext is not the session's peer."""

    def __init__(self, expected: str, got: str) -> None:
        super().__init__(f"sender inside the ciphertext is {got!r}, expected {expected!r}")
        self.expected = expected
        self.got = got


class UnknownSenderKey(DecryptionError):
    """A group message names a sender key id (``key_id``) this state does not hold."""

    def __init__(self, key_id: int) -> None:
        super().__init__(f"no sender key with key id {key_id}")
        self.key_id = key_id


class AttachmentMismatch(DecryptionError):
    """A decrypted attachment's ``field`` (digest, size, chunk_size) differs from its pointer."""

    def __init__(self, field: str) -> None:
        super().__init__(f"attachment {field} does not match its pointer")
        self.field = field


# --- key agreement --------------------------------------------------------------------


class KeyAgreementError(VoxError):
    """A key agreement (PQXDH or a ratchet DH) could not be completed."""


class InvalidPublicKey(KeyAgreementError):
    """A peer public key is malformed, of low order, or gives an all-zero secret."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid public key: {reason}")
        self.reason = reason


class BadSignature(KeyAgreementError):
    """A signature (over a prekey, a bundle, a device list, ...) does not verify."""

    def __init__(self, what: str) -> None:
        super().__init__(f"bad signature on {what}")
        self.what = what


class UnknownPrekey(KeyAgreementError):
    """The initial message names a prekey the responder does not (or no longer) hold."""

    def __init__(self, kind: str, key_id: int) -> None:
        super().__init__(f"unknown {kind} prekey id {key_id}")
        self.kind = kind
        self.key_id = key_id


# --- device lists ---------------------------------------------------------------------


class DeviceListError(VoxError):
    """A signed device list is unacceptable."""


class DeviceListRollback(DeviceListError):
    """A device list older than (or as old as) one already accepted."""

    def __init__(self, seen: int, got: int) -> None:
        super().__init__(f"device list version {got} is not newer than {seen}")
        self.seen = seen
        self.got = got


class DeviceListAccountMismatch(DeviceListError):
    """A signed device list names another account than the one it was fetched for."""

    def __init__(self, expected: str, got: str) -> None:
        super().__init__(f"device list is for {got!r}, expected {expected!r}")
        self.expected = expected
        self.got = got


class UnknownDevice(DeviceListError):
    """A device that is not on the account's signed device list."""

    def __init__(self, device_id: int) -> None:
        super().__init__(f"device {device_id} is not on the signed device list")
        self.device_id = device_id


# --- state ----------------------------------------------------------------------------


class StateError(VoxError):
    """An operation was called in a state that does not allow it."""
