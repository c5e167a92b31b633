"""What travels inside and around one pairwise ciphertext.

* :class:`Payload` is the plaintext the ratchet encrypts. It names the sender's account
  username and device id, so the recipient learns "who sent this" from the ciphertext,
  never from the relay::

      u8 version (1) || str16 sender username (<= 32 bytes) || u32 sender device id
      || u32 length || body (<= 16 MiB)

* :class:`RatchetMessage` is a normal Double Ratchet message::

      u8 version (1) || u8 kind (0x01) || header (41) || u32 length || ciphertext

* :class:`InitialMessage` carries the PQXDH fields in front of a ratchet message; an
  initiator sends it until the first reply from the responder arrives::

      u8 version (1) || u8 kind (0x02) || PQXDH prefix || header (41) || u32 length
      || ciphertext

  PQXDH prefix::

      str16 initiator username || u32 initiator device id
      || typed Ed25519 account key (33) || typed X25519 identity key (33)
      || typed X25519 ephemeral (base) key (33)
      || u32 signed prekey id || u32 KEM prekey id
      || u8 has_one_time_prekey || [u32 one-time prekey id]
      || ML-KEM-768 ciphertext (1088)

``ciphertext`` is AES-256-GCM output (ciphertext || 16-byte tag), so it is at least 16
bytes long. :func:`decode_message` reads either kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from crypto import primitives as p
from crypto.encoding import MAX_PAYLOAD, Reader, Writer
from crypto.errors import InvalidValue
from crypto.keys import DeviceAddress, Ed25519PublicKey, X25519PublicKey
from crypto.ratchet.header import Header

__all__ = [
    "ENVELOPE_VERSION",
    "KIND_INITIAL",
    "KIND_RATCHET",
    "MAX_BODY",
    "InitialMessage",
    "Payload",
    "PqxdhPrefix",
    "RatchetMessage",
    "decode_message",
]

ENVELOPE_VERSION: Final = 1
PAYLOAD_VERSION: Final = 1
KIND_RATCHET: Final = 0x01
KIND_INITIAL: Final = 0x02
#: Largest plaintext body one message may carry.
MAX_BODY: Final = MAX_PAYLOAD
_MAX_CIPHERTEXT: Final = MAX_BODY + 64 + p.AES_TAG_LEN


@dataclass(frozen=True, slots=True)
class Payload:
    """The plaintext inside a pairwise ciphertext: the sender's address and the body."""

    sender: DeviceAddress
    body: bytes = field(repr=False)

    def to_bytes(self) -> bytes:
        """Encode the payload."""
        if len(self.body) > MAX_BODY:
            raise InvalidValue("body", f"longer than {MAX_BODY} bytes")
        w = self.sender.write(Writer().u8(PAYLOAD_VERSION))
        return w.bytes32(self.body).finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> Payload:
        """Decode a payload."""
        r = Reader(data)
        r.version(PAYLOAD_VERSION)
        sender = DeviceAddress.read(r)
        body = r.bytes32("body", MAX_BODY)
        r.end()
        return cls(sender, body)


def _read_ciphertext(r: Reader) -> bytes:
    ciphertext = r.bytes32("ciphertext", _MAX_CIPHERTEXT)
    if len(ciphertext) < p.AES_TAG_LEN:
        raise InvalidValue("ciphertext", "shorter than the 16-byte tag")
    return ciphertext


@dataclass(frozen=True, slots=True)
class RatchetMessage:
    """A Double Ratchet message: clear header and AEAD ciphertext."""

    header: Header
    ciphertext: bytes

    def to_bytes(self) -> bytes:
        """Encode as a kind-0x01 envelope."""
        w = self.header.write(Writer().u8(ENVELOPE_VERSION).u8(KIND_RATCHET))
        return w.bytes32(self.ciphertext).finish()


@dataclass(frozen=True, slots=True)
class PqxdhPrefix:
    """The PQXDH fields an initiator puts in front of its first messages."""

    sender: DeviceAddress
    account_key: Ed25519PublicKey
    identity_key: X25519PublicKey
    base_key: X25519PublicKey
    signed_prekey_id: int
    kem_prekey_id: int
    one_time_prekey_id: int | None
    kem_ciphertext: bytes

    def __post_init__(self) -> None:
        if len(self.kem_ciphertext) != p.MLKEM768_CIPHERTEXT_LEN:
            raise InvalidValue("kem_ciphertext", f"must be {p.MLKEM768_CIPHERTEXT_LEN} bytes")

    def write(self, w: Writer) -> Writer:
        """Append the prefix encoding."""
        self.sender.write(w)
        w.raw(self.account_key.to_bytes()).raw(self.identity_key.to_bytes())
        w.raw(self.base_key.to_bytes()).u32(self.signed_prekey_id).u32(self.kem_prekey_id)
        w.u8(int(self.one_time_prekey_id is not None))
        if self.one_time_prekey_id is not None:
            w.u32(self.one_time_prekey_id)
        return w.raw(self.kem_ciphertext)

    @classmethod
    def read(cls, r: Reader) -> PqxdhPrefix:
        """Read the prefix encoding."""
        sender = DeviceAddress.read(r)
        account = Ed25519PublicKey.read(r)
        identity = X25519PublicKey.read(r)
        base = X25519PublicKey.read(r)
        signed_id, kem_id = r.u32(), r.u32()
        one_time_id = r.u32() if r.flag("has_one_time_prekey") else None
        kem_ct = r.raw(p.MLKEM768_CIPHERTEXT_LEN)
        return cls(sender, account, identity, base, signed_id, kem_id, one_time_id, kem_ct)


@dataclass(frozen=True, slots=True)
class InitialMessage:
    """A PQXDH prefix followed by a ratchet message."""

    prefix: PqxdhPrefix
    message: RatchetMessage

    def to_bytes(self) -> bytes:
        """Encode as a kind-0x02 envelope."""
        w = self.prefix.write(Writer().u8(ENVELOPE_VERSION).u8(KIND_INITIAL))
        return self.message.header.write(w).bytes32(self.message.ciphertext).finish()


def decode_message(data: bytes) -> InitialMessage | RatchetMessage:
    """Decode a pairwise envelope of either kind (raises only ``DecodeError``)."""
    r = Reader(data)
    r.version(ENVELOPE_VERSION)
    kind = r.u8()
    prefix: PqxdhPrefix | None = None
    if kind == KIND_INITIAL:
        prefix = PqxdhPrefix.read(r)
    elif kind != KIND_RATCHET:
        raise InvalidValue("kind", f"unknown message kind {kind:#04x}")
    message = RatchetMessage(Header.read(r), _read_ciphertext(r))
    r.end()
    return message if prefix is None else InitialMessage(prefix, message)
