"""Per-message keys: one AES-256-GCM key per message.

Envelope version 2 (what Vox sends): ``aes_key = HKDF-Expand-SHA256(mk, MESSAGE_KEY_INFO, 32)``
(= ``HMAC-SHA256(mk, MESSAGE_KEY_INFO || 0x01)``; ``mk`` is already a uniform PRF output, so
no extract step) and the 96-bit nonce is **drawn at random** for every encryption and carried
in the message. Encrypting again from a restored copy of a state therefore never repeats a
(key, nonce) pair.

Envelope version 1 (decrypted only): ``HKDF-SHA256(ikm=mk, salt=32 zero bytes,
info=MESSAGE_KEY_INFO_V1, L=44)`` gives ``aes_key (32) || nonce (12)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from crypto import primitives as p
from crypto.errors import InvalidValue

__all__ = ["MESSAGE_KEY_INFO", "MESSAGE_KEY_INFO_V1", "MessageKey", "aead_key"]

MESSAGE_KEY_INFO: Final = b"VoxRatchet-v2-MessageKey"
MESSAGE_KEY_INFO_V1: Final = b"VoxRatchet-v1-MessageKeys"
_EXPAND: Final = MESSAGE_KEY_INFO + b"\x01"


def aead_key(message_key: bytes) -> bytes:
    """The version-2 AES-256-GCM key of a raw 32-byte message key (one HMAC)."""
    return p.hmac_sha256(message_key, _EXPAND)


@dataclass(frozen=True, slots=True)
class MessageKey:
    """The 32-byte key of message number ``index`` on one chain."""

    key: bytes = field(repr=False)
    index: int

    def __post_init__(self) -> None:
        if len(self.key) != 32:
            raise InvalidValue("message key", "must be 32 bytes")

    def aead_key(self) -> bytes:
        """The AES-256-GCM key of envelope version 2."""
        return aead_key(self.key)

    def encrypt(self, nonce: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
        """AES-256-GCM encrypt (version 2) under a caller-drawn nonce; ``ciphertext || tag``."""
        return p.aes256gcm_encrypt(self.aead_key(), nonce, plaintext, associated_data)

    def decrypt(self, nonce: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
        """AES-256-GCM decrypt (version 2); raises ``AuthenticationFailed``."""
        return p.aes256gcm_decrypt(self.aead_key(), nonce, ciphertext, associated_data)

    def _expand_v1(self) -> tuple[bytes, bytes]:
        out = p.hkdf_sha256(self.key, b"", MESSAGE_KEY_INFO_V1, p.AES_KEY_LEN + p.AES_NONCE_LEN)
        return out[: p.AES_KEY_LEN], out[p.AES_KEY_LEN :]

    def encrypt_v1(self, plaintext: bytes, associated_data: bytes) -> bytes:
        """Version-1 AES-256-GCM (key and nonce from the message key). Vectors only."""
        key, nonce = self._expand_v1()
        return p.aes256gcm_encrypt(key, nonce, plaintext, associated_data)

    def decrypt_v1(self, ciphertext: bytes, associated_data: bytes) -> bytes:
        """Version-1 AES-256-GCM decrypt; raises ``AuthenticationFailed``."""
        key, nonce = self._expand_v1()
        return p.aes256gcm_decrypt(key, nonce, ciphertext, associated_data)
