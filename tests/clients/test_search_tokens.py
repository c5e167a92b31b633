"""Search tokens are ``HMAC-SHA256(search key, word)[:8]`` whether or not a word's token is
remembered from an earlier message (:data:`clients.store.search.CACHED_WORDS` per key)."""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

import pytest

from clients.store import search
from clients.store.models import Direction, StoredMessage
from clients.store.sqlite import SqliteStore


def expected(key: bytes, words: set[str]) -> set[bytes]:
    return {hmac.new(key, w.encode(), hashlib.sha256).digest()[: search.TOKEN_LEN] for w in words}


def test_remembered_tokens_are_the_keyed_hmacs_of_their_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(search, "CACHED_WORDS", 5)
    first, second = os.urandom(32), os.urandom(32)
    words = search.words("Grüße aus Köln, hello hello world 42 ÉTÉ été")
    for _ in range(2):  # computed, then remembered
        assert search.tokens(first, words) == expected(first, words)
        assert search.tokens(second, words) == expected(second, words)  # not the first key's
    more = {f"w{i}" for i in range(12)}  # beyond CACHED_WORDS: starts over, still right
    assert search.tokens(first, more) == expected(first, more)
    assert search.tokens(first, words | more) == expected(first, words | more)
    assert search.tokens(first, set()) == set()


def test_a_closed_or_rekeyed_store_leaves_no_remembered_words_or_key_state(
    tmp_path: Path,
) -> None:
    store = SqliteStore.open(tmp_path / "p")
    store.add_message(StoredMessage("m", "bob", Direction.IN, "bob", 1, 1.0, 1.0, "secret plan"))
    first = store._sealer.search_key
    assert search.tokens(first, {"secret"})  # remembered while the store is open
    assert first in search._TOKENS and first in search._PADS
    store.change_passphrase("a passphrase")
    second = store._sealer.search_key
    assert first not in search._TOKENS and first not in search._PADS  # the old key's: gone
    assert second in search._TOKENS  # the index was rebuilt under the new key
    store.close()
    assert second not in search._TOKENS and second not in search._PADS
