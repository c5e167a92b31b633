"""The Double Ratchet message header (sent in clear, authenticated as associated data).

Encoding (41 bytes)::

    typed X25519 ratchet key (33) || u32 previous_chain_length || u32 index
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from crypto.encoding import Reader, Writer
from crypto.keys import X25519PublicKey

__all__ = ["HEADER_LEN", "Header"]

HEADER_LEN: Final = 41


@dataclass(frozen=True, slots=True)
class Header:
    """The sender's current ratchet key, its previous sending chain's length, and the index."""

    ratchet_key: X25519PublicKey
    previous_chain_length: int
    index: int

    def write(self, w: Writer) -> Writer:
        """Append the 41-byte encoding."""
        return w.raw(self.ratchet_key.to_bytes()).u32(self.previous_chain_length).u32(self.index)

    def to_bytes(self) -> bytes:
        """The 41-byte encoding (also the header part of the AEAD associated data)."""
        return self.write(Writer()).finish()

    @classmethod
    def read(cls, r: Reader) -> Header:
        """Read a header."""
        return cls(X25519PublicKey.read(r), r.u32(), r.u32())
