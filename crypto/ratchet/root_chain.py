"""The root chain: the KDF that turns each DH ratchet output into new chain keys.

``KDF_RK(rk, dh_out) = HKDF-SHA256(ikm=dh_out, salt=rk, info=ROOT_INFO, L=64)``; the first
32 bytes are the next root key, the last 32 the new chain key (whose index starts at 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from crypto import primitives as p
from crypto.errors import InvalidValue
from crypto.ratchet.chain_key import ChainKey

__all__ = ["ROOT_INFO", "RootKey"]

ROOT_INFO: Final = b"VoxRatchet-v1-Root"


@dataclass(frozen=True, slots=True)
class RootKey:
    """A 32-byte root key of the Double Ratchet."""

    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.key) != 32:
            raise InvalidValue("root key", "must be 32 bytes")

    def advance(self, dh_output: bytes) -> tuple[RootKey, ChainKey]:
        """Mix one DH output in: return the next root key and a fresh chain key."""
        out = p.hkdf_sha256(dh_output, self.key, ROOT_INFO, 64)
        return RootKey(out[:32]), ChainKey(out[32:], 0)
