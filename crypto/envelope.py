"""What travels inside and around one pairwise ciphertext.

* :class:`Payload` is the plaintext the ratchet encrypts. It names the sender's account
  username and device id, so the recipient learns "who sent this" from the ciphertext,
  never from the relay::

      u8 version (1) || str16 sender username (<= 32 bytes) || u32 sender device id
      || u32 length || body (<= 16 MiB)

* :class:`RatchetMessage` is a normal Double Ratchet message. Version 2 (what Vox sends)
  carries a fresh random 96-bit AES-GCM nonce; version 1 (still decrypted, never sent)
  derived the nonce from the message key::

      v2: u8 version (2) || u8 kind (0x01) || header (41) || nonce (12) || u32 length
          || ciphertext
      v1: u8 version (1) || u8 kind (0x01) || header (41) || u32 length || ciphertext

* :class:`InitialMessage` carries the PQXDH fields in front of a ratchet message; an
  initiator sends it until the first reply from the responder arrives::

      u8 version || u8 kind (0x02) || PQXDH prefix || header (41) || [nonce (12), v2 only]
      || u32 length || ciphertext

  PQXDH prefix::

      str16 initiator username || u32 initiator device id
      || typed Ed25519 account key (33) || typed X25519 identity key (33)
      || typed X25519 ephemeral (base) key (33)
      || u32 signed prekey id || u32 KEM prekey id
      || u8 has_one_time_prekey || [u32 one-time prekey id]
      || ML-KEM-768 ciphertext (1088)

``ciphertext`` is AES-256-GCM output (ciphertext || 16-byte tag), so it is at least 16
bytes long. :func:`decode_message` reads either kind of either version. In version 2 the
AEAD associated data is ``session AD || u8 version || u8 kind || header``
(:func:`message_associated_data`), so neither byte can be changed in transit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from crypto import primitives as p
from crypto.encoding import MAX_PAYLOAD, Reader, Writer
from crypto.errors import InvalidValue, UnsupportedVersion
from crypto.keys import DeviceAddress, Ed25519PublicKey, X25519PublicKey
from crypto.ratchet.header import Header

__all__ = [
    "ENVELOPE_VERSION",
    "ENVELOPE_VERSION_V1",
    "KIND_INITIAL",
    "KIND_RATCHET",
    "MAX_BODY",
    "InitialMessage",
    "Payload",
    "PqxdhPrefix",
    "RatchetMessage",
    "decode_message",
    "message_associated_data",
]

#: The envelope version Vox sends (random nonce in the message; version and kind in the AD).
ENVELOPE_VERSION: Final = 2
#: The first envelope version (nonce derived from the message key): decrypted, never sent.
ENVELOPE_VERSION_V1: Final = 1
_VERSIONS: Final = (ENVELOPE_VERSION_V1, ENVELOPE_VERSION)
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


def _read_nonce(r: Reader, version: int) -> bytes:
    return r.raw(p.AES_NONCE_LEN) if version == ENVELOPE_VERSION else b""


def message_associated_data(session_ad: bytes, version: int, kind: int, header: bytes) -> bytes:
    """The AEAD associated data of one message.

    Version 2: ``session AD || u8 version || u8 kind || header``; version 1 (legacy):
    ``session AD || header``.
    """
    if version == ENVELOPE_VERSION_V1:
        return session_ad + header
    return session_ad + bytes((version, kind)) + header


@dataclass(frozen=True, slots=True)
class RatchetMessage:
    """A Double Ratchet message: clear header, nonce (version 2) and AEAD ciphertext."""

    header: Header
    nonce: bytes
    ciphertext: bytes
    version: int = ENVELOPE_VERSION

    def __post_init__(self) -> None:
        if self.version not in _VERSIONS:
            raise InvalidValue("version", f"unknown envelope version {self.version}")
        want = p.AES_NONCE_LEN if self.version == ENVELOPE_VERSION else 0
        if len(self.nonce) != want:
            raise InvalidValue("nonce", f"must be {want} bytes in version {self.version}")

    def write_body(self, w: Writer) -> Writer:
        """Append ``header || [nonce] || bytes32 ciphertext`` (after the kind-specific part)."""
        return self.header.write(w).raw(self.nonce).bytes32(self.ciphertext)

    def to_bytes(self) -> bytes:
        """Encode as a kind-0x01 envelope."""
        return self.write_body(Writer().u8(self.version).u8(KIND_RATCHET)).finish()


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
    """A PQXDH prefix followed by a ratchet message (of the same envelope version)."""

    prefix: PqxdhPrefix
    message: RatchetMessage

    def to_bytes(self) -> bytes:
        """Encode as a kind-0x02 envelope."""
        w = self.prefix.write(Writer().u8(self.message.version).u8(KIND_INITIAL))
        return self.message.write_body(w).finish()


def decode_message(data: bytes) -> InitialMessage | RatchetMessage:
    """Decode a pairwise envelope of either kind and version (raises only ``DecodeError``)."""
    r = Reader(data)
    version = r.u8()
    if version not in _VERSIONS:
        raise UnsupportedVersion(ENVELOPE_VERSION, version)
    kind = r.u8()
    prefix: PqxdhPrefix | None = None
    if kind == KIND_INITIAL:
        prefix = PqxdhPrefix.read(r)
    elif kind != KIND_RATCHET:
        raise InvalidValue("kind", f"unknown message kind {kind:#04x}")
    header = Header.read(r)
    nonce = _read_nonce(r, version)
    message = RatchetMessage(header, nonce, _read_ciphertext(r), version)
    r.end()
    return message if prefix is None else InitialMessage(prefix, message)
