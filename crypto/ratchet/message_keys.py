"""Per-message keys: one AES-256-GCM key and 96-bit nonce per message.

``HKDF-SHA256(ikm=mk, salt=32 zero bytes, info=MESSAGE_KEY_INFO, L=44)`` gives
``aes_key (32) || nonce (12)``. Each message key encrypts exactly one message, so the
nonce never repeats under a key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from crypto import primitives as p
from crypto.errors import InvalidValue

__all__ = ["MESSAGE_KEY_INFO", "MessageKey"]

MESSAGE_KEY_INFO: Final = b"VoxRatchet-v1-MessageKeys"


@dataclass(frozen=True, slots=True)
class MessageKey:
    """The 32-byte key of message number ``index`` on one chain."""

    key: bytes = field(repr=False)
    index: int

    def __post_init__(self) -> None:
        if len(self.key) != 32:
            raise InvalidValue("message key", "must be 32 bytes")

    def _expand(self) -> tuple[bytes, bytes]:
        out = p.hkdf_sha256(self.key, b"", MESSAGE_KEY_INFO, p.AES_KEY_LEN + p.AES_NONCE_LEN)
        return out[: p.AES_KEY_LEN], out[p.AES_KEY_LEN :]

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
        """AES-256-GCM encrypt; returns ``ciphertext || tag``."""
        key, nonce = self._expand()
        return p.aes256gcm_encrypt(key, nonce, plaintext, associated_data)

    def decrypt(self, ciphertext: bytes, associated_data: bytes) -> bytes:
        """AES-256-GCM decrypt; raises ``AuthenticationFailed``."""
        key, nonce = self._expand()
        return p.aes256gcm_decrypt(key, nonce, ciphertext, associated_data)
