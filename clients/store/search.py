"""Word matching for :meth:`~clients.store.base.MessageStore.search_messages`, shared by
both stores: a message matches when every word of the query is one of its words.

Words are maximal runs of Unicode word characters (``\\w+``), case-folded. The SQLite store
keeps an index of **keyed word tokens** — ``HMAC-SHA256(search key, word)[:8]`` per distinct
word of a message's text or caption, the search key derived from the store key — so the
database file reveals neither the words nor the texts (only how many distinct words a message
has and which messages share a word); candidates are then decrypted and checked.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from clients.store.models import StoredMessage

__all__ = ["CACHED_WORDS", "TOKEN_LEN", "forget", "matches", "searchable_text", "tokens", "words"]

TOKEN_LEN = 8
_WORD = re.compile(r"\w+")


def words(text: str) -> set[str]:
    """The distinct case-folded words of ``text``."""
    return set(_WORD.findall(text.casefold()))


def searchable_text(message: StoredMessage) -> str:
    """What search looks at: the text, or a file's caption and name (nothing once deleted)."""
    if message.deleted:
        return ""
    parts = [message.text or ""]
    if message.attachment is not None:
        parts += [
            str(message.attachment.get("caption", "")),
            str(message.attachment.get("file_name", "")),
        ]
    return " ".join(parts)


def matches(message: StoredMessage, query_words: set[str]) -> bool:
    """Whether every query word is a word of the message."""
    return bool(query_words) and query_words <= words(searchable_text(message))


def tokens(key: bytes, message_words: set[str]) -> set[bytes]:
    """The keyed tokens of a set of words (see the module docstring).

    HMAC-SHA256 from the key's two padded hash states, computed once per key and copied per
    word (what :mod:`hmac` does, without setting up the key again for every word: 2-3x
    faster per word); the last :data:`CACHED_WORDS` words' tokens are remembered per key."""
    known = _TOKENS.get(key)
    if known is None:
        if len(_TOKENS) >= 8:
            _TOKENS.clear()
        known = _TOKENS[key] = {}
    out = set()
    pads = None
    for w in message_words:
        token = known.get(w)
        if token is None:
            if pads is None:
                pads = _pads(key)
            h = pads[0].copy()
            h.update(w.encode("utf-8"))
            o = pads[1].copy()
            o.update(h.digest())
            token = o.digest()[:TOKEN_LEN]
            if len(known) >= CACHED_WORDS:
                known.clear()
            known[w] = token
        out.add(token)
    return out


#: Words whose token :func:`tokens` remembers per key (the words of a chat recur: a word's
#: HMAC is computed once, not for every message that uses it); then it starts over.
CACHED_WORDS = 4096
_TOKENS: dict[bytes, dict[str, bytes]] = {}

_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))
#: HMAC-SHA256's inner and outer hash states per key (one or two store keys per process).
_PADS: dict[bytes, tuple[Any, Any]] = {}


def forget(key: bytes) -> None:
    """Drop what is remembered for ``key`` (its words' tokens and its HMAC states): the store
    using it closed, or its key changed."""
    _TOKENS.pop(key, None)
    _PADS.pop(key, None)


def _pads(key: bytes) -> tuple[Any, Any]:
    pads = _PADS.get(key)
    if pads is None:
        if len(_PADS) >= 8:
            _PADS.clear()
        block = (hashlib.sha256(key).digest() if len(key) > 64 else key).ljust(64, b"\0")
        pads = (hashlib.sha256(block.translate(_IPAD)), hashlib.sha256(block.translate(_OPAD)))
        _PADS[key] = pads
    return pads
