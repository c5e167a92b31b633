"""Message keys kept for messages that have not arrived yet (out-of-order delivery).

Keys are stored by ``(sender ratchet key, index)`` in arrival order, each with the time it was
stored (``stored_at``, whole seconds of the caller's clock; ``0`` = unknown). One message may
skip at most ``max_skip`` keys (checked by the session before anything is stored); the store as
a whole holds at most ``max_stored`` keys and evicts the oldest beyond that; and a key older
than ``max_age`` seconds is **expired**: it no longer opens its message and is deleted at the
next commit (:meth:`SkippedKeys.expire`). A key stored while the clock was unknown starts
aging at the first clock reading.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator

from crypto.ratchet.message_keys import MessageKey

__all__ = ["SkippedKeys"]


class SkippedKeys:
    """A bounded, insertion-ordered map ``(ratchet key, index) -> (message key, stored_at)``.

    :meth:`copy` is copy-on-write: the copy and the original share the map until either
    changes it (each session decrypt works on a copy; most never touch the skipped keys).
    """

    __slots__ = ("_keys", "_shared", "max_stored")

    def __init__(self, max_stored: int) -> None:
        self.max_stored = max_stored
        self._keys: OrderedDict[tuple[bytes, int], tuple[bytes, int]] = OrderedDict()
        self._shared = False  # True: another SkippedKeys may hold this same map

    def _writable(self) -> OrderedDict[tuple[bytes, int], tuple[bytes, int]]:
        """The map, made private to this object first if it may be shared."""
        if self._shared:
            self._keys = self._keys.copy()
            self._shared = False
        return self._keys

    def get(self, ratchet_key: bytes, index: int, clock: int, max_age: int) -> MessageKey | None:
        """The stored key for this message unless absent or expired at ``clock`` (not removed)."""
        entry = self._keys.get((ratchet_key, index))
        if entry is None or _expired(entry[1], clock, max_age):
            return None
        return MessageKey(entry[0], index)

    def remove(self, ratchet_key: bytes, index: int) -> None:
        """Forget a key once its message decrypted."""
        if (ratchet_key, index) in self._keys:
            del self._writable()[(ratchet_key, index)]

    def add(self, ratchet_key: bytes, keys: Iterable[MessageKey], stored_at: int = 0) -> None:
        """Store keys of one chain, evicting the oldest beyond ``max_stored``."""
        store = None
        for mk in keys:
            if store is None:
                store = self._writable()
            store[(ratchet_key, mk.index)] = (mk.key, stored_at)
        if store is not None:
            while len(store) > self.max_stored:
                store.popitem(last=False)

    def expire(self, clock: int, max_age: int) -> int:
        """Delete the keys expired at ``clock``; stamp keys of unknown age with ``clock``.

        Returns how many keys were deleted. ``clock == 0`` (unknown) or ``max_age == 0`` (no
        limit) deletes nothing.
        """
        if clock <= 0 or not self._keys:
            return 0
        expired = [slot for slot, (_, at) in self._keys.items() if _expired(at, clock, max_age)]
        unknown = [slot for slot, (_, at) in self._keys.items() if at == 0]
        if expired or unknown:
            store = self._writable()
            for slot in expired:
                del store[slot]
            for slot in unknown:
                if slot in store:
                    store[slot] = (store[slot][0], clock)
        return len(expired)

    def copy(self) -> SkippedKeys:
        """An independent copy (copy-on-write: the map is copied when either side changes)."""
        other = SkippedKeys.__new__(SkippedKeys)
        other.max_stored, other._keys = self.max_stored, self._keys
        other._shared = self._shared = True
        return other

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[tuple[bytes, MessageKey, int]]:
        for (ratchet_key, index), (key, stored_at) in self._keys.items():
            yield ratchet_key, MessageKey(key, index), stored_at

    def __repr__(self) -> str:
        return f"SkippedKeys(count={len(self._keys)}, max_stored={self.max_stored})"


def _expired(stored_at: int, clock: int, max_age: int) -> bool:
    return max_age > 0 and stored_at > 0 and clock - stored_at > max_age
