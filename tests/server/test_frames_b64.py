"""``canonical_b64``: the client's base64 text is reused only when it is what re-encoding the
decoded bytes gives (property test over every strictly decodable short string); and
``decode_b64`` accepts and returns exactly what strict ``binascii`` decoding does, whichever
decoder it uses."""

from __future__ import annotations

import binascii

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.delivery.frames import FrameError, canonical_b64, decode_b64
from wire.encoding import b64

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


@given(st.text(alphabet=_ALPHABET, max_size=12))
def test_canonical_b64_equals_reencoding_for_any_strict_base64(text: str) -> None:
    try:
        data = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        return
    result = canonical_b64(text, data)
    assert result == b64(data)
    if result == text:
        assert binascii.a2b_base64(result, strict_mode=True) == data


def test_client_text_is_reused_when_canonical() -> None:
    text = b64(bytes(range(200)))
    assert canonical_b64(text, bytes(range(200))) is text
    assert canonical_b64("QR==", b"A") == "QQ=="
    assert canonical_b64("QUJ=", b"AB") == "QUI="


def _strict(text: str) -> bytes | None:
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        return None


def _decoded(text: str) -> bytes | None:
    try:
        return decode_b64(text, "m")
    except FrameError as exc:
        assert exc.code == "bad_base64"
        return None


#: The standard alphabet, padding, and what other decoders accept or a JSON string could
#: turn into something else: URL-safe characters, escapes, quotes, whitespace, non-ASCII.
_TRICKY = _ALPHABET + '-_\\"\n\r\t u\u00e9\u20ac'


@given(st.text(alphabet=_TRICKY, max_size=16))
def test_decode_b64_is_strict_binascii_on_any_short_text(text: str) -> None:
    assert _decoded(text) == _strict(text)


@given(st.binary(max_size=64), st.integers(0, 100), st.sampled_from([*list(_TRICKY), ""]))
def test_decode_b64_is_strict_binascii_on_payloads_and_their_mutations(
    data: bytes, where: int, char: str
) -> None:
    text = b64(data)
    assert _decoded(text) == data
    if text:
        i = where % len(text)
        for mutated in (text[:i] + char + text[i + 1 :], text[:i] + char + text[i:], text[:i]):
            assert _decoded(mutated) == _strict(mutated)


@pytest.mark.parametrize(
    "text", ["QR==", "QUJ=", "QUK=", "QQ", "QQ=", "-_8=", "QQ==QQ==", "Q===", "\\u0041AAA"]
)
def test_decode_b64_on_what_the_decoders_disagree_about(text: str) -> None:
    assert _decoded(text) == _strict(text)
