"""``canonical_b64``: the client's base64 text is reused only when it is what re-encoding the
decoded bytes gives (property test over every strictly decodable short string)."""

from __future__ import annotations

import binascii

from hypothesis import given
from hypothesis import strategies as st

from server.delivery.frames import canonical_b64
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
