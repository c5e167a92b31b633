"""The session's direct parser for version-2 ratchet messages accepts exactly what the general
decoder accepts (and the same fields), so speed costs no strictness."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.envelope import RatchetMessage, decode_message
from crypto.errors import DecodeError, InvalidValue, VoxError
from crypto.ratchet.session import _split_ratchet_message
from tests.crypto.support import make_pair

_ALICE, _BOB, _RNG = make_pair(b"fast-path")
_BOB.decrypt(_ALICE.encrypt(b"leave the initial phase", _RNG))
_ALICE.decrypt(_BOB.encrypt(b"ok", _RNG))
SAMPLE = _ALICE.encrypt(b"a sample body", _RNG)


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 200), st.integers(0, 255), st.integers(-3, 3))
def test_the_fast_parser_and_the_decoder_agree(index: int, value: int, cut: int) -> None:
    data = bytearray(SAMPLE)
    data[index % len(data)] = value
    mutated = bytes(data[: len(data) - cut]) if cut >= 0 else bytes(data) + b"\x00" * -cut
    fast = _split_ratchet_message(mutated)
    try:
        decoded = decode_message(mutated)
    except InvalidValue:
        # The one check the fast parser leaves to the session: a non-canonical ratchet key,
        # refused with the same error before it is used.
        if fast is not None:
            before = _BOB.to_bytes()
            with contextlib.suppress(VoxError):
                _BOB.decrypt(mutated)
            assert _BOB.to_bytes() == before
        return
    except DecodeError:
        assert fast is None
        return
    if isinstance(decoded, RatchetMessage) and decoded.version == 2:
        assert fast == (decoded.header.to_bytes(), decoded.nonce, decoded.ciphertext)
    else:
        assert fast is None


def test_a_non_canonical_ratchet_key_is_refused_on_the_fast_path_too() -> None:
    data = bytearray(SAMPLE)
    data[3:35] = b"\xff" * 32  # u >= 2^255 - 19
    assert _split_ratchet_message(bytes(data)) is not None
    before = _BOB.to_bytes()
    with pytest.raises(InvalidValue):
        _BOB.decrypt(bytes(data))
    assert _BOB.to_bytes() == before
