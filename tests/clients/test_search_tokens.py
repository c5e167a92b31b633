"""Search tokens are ``HMAC-SHA256(search key, word)[:8]`` whether or not a word's token is
remembered from an earlier message (:data:`clients.store.search.CACHED_WORDS` per key)."""

from __future__ import annotations

import hashlib
import hmac
import os

import pytest

from clients.store import search


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
