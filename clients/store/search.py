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
import hmac
import re

from clients.store.models import StoredMessage

__all__ = ["TOKEN_LEN", "matches", "searchable_text", "tokens", "words"]

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
    """The keyed tokens of a set of words (see the module docstring)."""
    return {
        hmac.new(key, w.encode("utf-8"), hashlib.sha256).digest()[:TOKEN_LEN] for w in message_words
    }
