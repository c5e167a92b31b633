"""Message keys kept for messages that have not arrived yet (out-of-order delivery).

Keys are stored by ``(sender ratchet key, index)`` in arrival order. One message may skip
at most ``max_skip`` keys of a chain (checked by the session before anything is stored);
the store as a whole holds at most ``max_stored`` keys and evicts the oldest beyond that.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator

from crypto.ratchet.message_keys import MessageKey

__all__ = ["SkippedKeys"]


class SkippedKeys:
    """A bounded, insertion-ordered map ``(ratchet key, index) -> message key``."""

    __slots__ = ("_keys", "max_stored")

    def __init__(self, max_stored: int) -> None:
        self.max_stored = max_stored
        self._keys: OrderedDict[tuple[bytes, int], bytes] = OrderedDict()

    def get(self, ratchet_key: bytes, index: int) -> MessageKey | None:
        """The stored key for this message, if any (not removed: see :meth:`remove`)."""
        key = self._keys.get((ratchet_key, index))
        return None if key is None else MessageKey(key, index)

    def remove(self, ratchet_key: bytes, index: int) -> None:
        """Forget a key once its message decrypted."""
        self._keys.pop((ratchet_key, index), None)

    def add(self, ratchet_key: bytes, keys: Iterable[MessageKey]) -> None:
        """Store keys of one chain, evicting the oldest beyond ``max_stored``."""
        for mk in keys:
            self._keys[(ratchet_key, mk.index)] = mk.key
        while len(self._keys) > self.max_stored:
            self._keys.popitem(last=False)

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[tuple[bytes, MessageKey]]:
        for (ratchet_key, index), key in self._keys.items():
            yield ratchet_key, MessageKey(key, index)

    def __repr__(self) -> str:
        return f"SkippedKeys(count={len(self._keys)}, max_stored={self.max_stored})"
