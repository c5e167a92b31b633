"""Safety numbers: a numeric fingerprint of two accounts, identical on both sides.

The construction is Signal's ``NumericFingerprintGenerator`` with Vox's key encoding:

1. For each party, with ``key`` = the 33-byte typed account public key (``0x02 || 32``) and
   ``id`` = the UTF-8 username::

       h = SHA-512(u16 0 || key || id || key)          # iteration 1
       h = SHA-512(h || key)                           # iterations 2 ..= 5200

2. The party's *fingerprint* is ``h[0:32]`` (scannable form); its 30 displayed digits come from
   ``h[0:30]``: six 5-byte big-endian integers, each ``mod 100000`` and zero-padded to 5 digits.
3. The 60-digit safety number is the two 30-digit strings concatenated, the one that sorts
   first (as a digit string) first, so both parties compute the same number. It is displayed as
   12 groups of 5 digits separated by spaces.

The scannable form (for QR codes) is ``u8 1 || local fingerprint[32] || remote fingerprint[32]``
(65 bytes), written as 130 upper-case hex digits (QR alphanumeric mode). A scanned code matches
when its *local* half equals our *remote* half and its *remote* half equals our *local* half;
the comparison is constant-time.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
from dataclasses import dataclass
from typing import Final

from crypto.encoding import Reader, Writer
from crypto.errors import InvalidValue
from crypto.keys import AccountPublicKey

__all__ = [
    "ITERATIONS",
    "SafetyNumber",
    "ScannableFingerprint",
    "safety_number",
    "safety_numbers_equal",
]

FINGERPRINT_VERSION: Final = 0  # the u16 hashed first, as in Signal
SCANNABLE_VERSION: Final = 1
ITERATIONS: Final = 5200
FINGERPRINT_SIZE: Final = 32
DIGITS_PER_PARTY: Final = 30


def _iterated_hash(account_key: AccountPublicKey, username: str) -> bytes:
    key = account_key.to_bytes()
    h = hashlib.sha512(
        Writer().u16(FINGERPRINT_VERSION).raw(key).raw(username.encode("utf-8")).finish()
    )
    h.update(key)
    digest = h.digest()
    for _ in range(ITERATIONS - 1):
        digest = hashlib.sha512(digest + key).digest()
    return digest


def _digits(digest: bytes) -> str:
    return "".join(
        f"{int.from_bytes(digest[i : i + 5], 'big') % 100000:05d}" for i in range(0, 30, 5)
    )


@dataclass(frozen=True, slots=True)
class ScannableFingerprint:
    """The compact, QR-friendly form: both parties' 32-byte fingerprints, ours first."""

    local: bytes
    remote: bytes

    def to_bytes(self) -> bytes:
        """Encode as ``u8 1 || local[32] || remote[32]``."""
        return Writer().u8(SCANNABLE_VERSION).raw(self.local).raw(self.remote).finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> ScannableFingerprint:
        """Decode :meth:`to_bytes` output; raises only :class:`~crypto.errors.DecodeError`."""
        r = Reader(data)
        r.version(SCANNABLE_VERSION)
        local = r.raw(FINGERPRINT_SIZE)
        remote = r.raw(FINGERPRINT_SIZE)
        r.end()
        return cls(local, remote)

    def to_string(self) -> str:
        """The 130 upper-case hex digits of :meth:`to_bytes` (QR alphanumeric mode)."""
        return self.to_bytes().hex().upper()

    @classmethod
    def from_string(cls, text: str) -> ScannableFingerprint:
        """Parse :meth:`to_string` output (case-insensitive, surrounding spaces ignored)."""
        try:
            data = bytes.fromhex(text.strip())
        except (ValueError, binascii.Error) as exc:
            raise InvalidValue("scannable fingerprint", "not hexadecimal") from exc
        return cls.from_bytes(data)

    def matches(self, scanned: ScannableFingerprint) -> bool:
        """True if ``scanned`` (the other party's code) names the same two keys. Constant-time."""
        a = hmac.compare_digest(self.local, scanned.remote)
        b = hmac.compare_digest(self.remote, scanned.local)
        return a & b


@dataclass(frozen=True, slots=True)
class SafetyNumber:
    """A computed safety number: 60 digits plus the scannable form from our side."""

    digits: str
    scannable: ScannableFingerprint

    def display(self) -> str:
        """The 60 digits as 12 space-separated groups of 5."""
        return " ".join(self.digits[i : i + 5] for i in range(0, 60, 5))

    def __str__(self) -> str:
        return self.display()


def safety_number(
    local_username: str,
    local_key: AccountPublicKey,
    remote_username: str,
    remote_key: AccountPublicKey,
) -> SafetyNumber:
    """Compute the safety number between our account and a peer's (5,200 SHA-512 rounds each)."""
    local = _iterated_hash(local_key, local_username)
    remote = _iterated_hash(remote_key, remote_username)
    a, b = _digits(local), _digits(remote)
    digits = a + b if a <= b else b + a
    scannable = ScannableFingerprint(local[:FINGERPRINT_SIZE], remote[:FINGERPRINT_SIZE])
    return SafetyNumber(digits, scannable)


def safety_numbers_equal(a: str, b: str) -> bool:
    """Compare two displayed or raw safety numbers in constant time (spaces are ignored)."""
    x = "".join(a.split()).encode("ascii", "replace")
    y = "".join(b.split()).encode("ascii", "replace")
    return hmac.compare_digest(x, y)
