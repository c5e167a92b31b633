"""A symmetric-key ratchet chain (sending or receiving).

``message_key = HMAC-SHA256(ck, 0x01)`` and ``next_ck = HMAC-SHA256(ck, 0x02)``, as in
Signal's Double Ratchet specification §5.2. ``index`` is the number of the message whose
key :meth:`ChainKey.message_key` yields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from crypto import primitives as p
from crypto.errors import InvalidValue
from crypto.ratchet.message_keys import MessageKey

__all__ = ["CHAIN_KEY_CONSTANT", "MESSAGE_KEY_CONSTANT", "ChainKey"]

MESSAGE_KEY_CONSTANT: Final = b"\x01"
CHAIN_KEY_CONSTANT: Final = b"\x02"
MAX_INDEX: Final = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class ChainKey:
    """A 32-byte chain key and the index of the next message on the chain."""

    key: bytes = field(repr=False)
    index: int = 0

    def __post_init__(self) -> None:
        if len(self.key) != 32:
            raise InvalidValue("chain key", "must be 32 bytes")
        if not 0 <= self.index <= MAX_INDEX:
            raise InvalidValue("chain index", "must be a u32")

    def message_key(self) -> MessageKey:
        """The message key for message number :attr:`index`."""
        return MessageKey(p.hmac_sha256(self.key, MESSAGE_KEY_CONSTANT), self.index)

    def next(self) -> ChainKey:
        """The chain key for the following message."""
        return ChainKey(p.hmac_sha256(self.key, CHAIN_KEY_CONSTANT), self.index + 1)
