from __future__ import annotations

import contextlib
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crypto.errors import DecodeError, InvalidValue, TrailingBytes, Truncated, UnsupportedVersion
from crypto.fingerprint import (
    ITERATIONS,
    ScannableFingerprint,
    safety_number,
    safety_numbers_equal,
)
from crypto.keys import AccountKey
from crypto.primitives import DeterministicRng

ALICE = AccountKey.generate(DeterministicRng(b"alice")).public_key
BOB = AccountKey.generate(DeterministicRng(b"bob")).public_key
EVE = AccountKey.generate(DeterministicRng(b"eve")).public_key


def reference_digits(username: str, key: bytes) -> str:
    """Signal's NumericFingerprintGenerator, written out independently."""
    h = b"\x00\x00" + key + username.encode()
    for _ in range(ITERATIONS):
        h = hashlib.sha512(h + key).digest()
    return "".join(f"{int.from_bytes(h[i : i + 5], 'big') % 100000:05d}" for i in range(0, 30, 5))


def test_both_sides_compute_the_same_sixty_digits() -> None:
    at_alice = safety_number("alice", ALICE, "bob", BOB)
    at_bob = safety_number("bob", BOB, "alice", ALICE)
    assert at_alice.digits == at_bob.digits
    assert len(at_alice.digits) == 60 and at_alice.digits.isdigit()
    groups = at_alice.display().split(" ")
    assert len(groups) == 12 and all(len(g) == 5 for g in groups)
    assert str(at_alice) == at_alice.display()


def test_digits_follow_signals_construction() -> None:
    a = reference_digits("alice", ALICE.to_bytes())
    b = reference_digits("bob", BOB.to_bytes())
    assert safety_number("alice", ALICE, "bob", BOB).digits == min(a, b) + max(a, b)


def test_a_changed_key_or_username_changes_the_number() -> None:
    base = safety_number("alice", ALICE, "bob", BOB).digits
    assert safety_number("alice", ALICE, "bob", EVE).digits != base
    assert safety_number("alice", EVE, "bob", BOB).digits != base
    assert safety_number("alice", ALICE, "bobby", BOB).digits != base


def test_scanned_codes_match_only_the_same_pair_of_keys() -> None:
    at_alice = safety_number("alice", ALICE, "bob", BOB).scannable
    at_bob = safety_number("bob", BOB, "alice", ALICE).scannable
    assert at_alice.matches(ScannableFingerprint.from_string(at_bob.to_string()))
    assert at_bob.matches(at_alice)
    assert not at_alice.matches(at_alice)  # our own code is not the peer's
    # A man in the middle: Alice was given Eve's key for bob, Bob was given Eve's for alice.
    alice_fooled = safety_number("alice", ALICE, "bob", EVE).scannable
    bob_fooled = safety_number("bob", BOB, "alice", EVE).scannable
    assert not alice_fooled.matches(bob_fooled)
    assert not bob_fooled.matches(alice_fooled)
    assert not alice_fooled.matches(at_bob)


def test_scannable_codec_is_versioned_and_exact() -> None:
    code = safety_number("alice", ALICE, "bob", BOB).scannable
    data = code.to_bytes()
    assert len(data) == 65 and data[0] == 1
    assert ScannableFingerprint.from_bytes(data) == code
    text = code.to_string()
    assert text == data.hex().upper() and len(text) == 130
    assert ScannableFingerprint.from_string(" " + text.lower() + "\n") == code
    with pytest.raises(UnsupportedVersion):
        ScannableFingerprint.from_bytes(b"\x02" + data[1:])
    with pytest.raises(Truncated):
        ScannableFingerprint.from_bytes(data[:-1])
    with pytest.raises(TrailingBytes):
        ScannableFingerprint.from_bytes(data + b"\x00")
    with pytest.raises(InvalidValue):
        ScannableFingerprint.from_string("not hex")


def test_displayed_numbers_compare_ignoring_spaces() -> None:
    number = safety_number("alice", ALICE, "bob", BOB)
    assert safety_numbers_equal(number.display(), number.digits)
    other = safety_number("alice", ALICE, "bob", EVE)
    assert not safety_numbers_equal(number.display(), other.display())
    assert not safety_numbers_equal(number.digits, "é" + number.digits[1:])


@given(st.binary(max_size=80))
def test_scannable_decoder_raises_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        ScannableFingerprint.from_bytes(data)


@given(st.text(max_size=140))
def test_scannable_string_parser_raises_only_decode_error(text: str) -> None:
    with contextlib.suppress(DecodeError):
        ScannableFingerprint.from_string(text)
