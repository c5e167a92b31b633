"""Security properties of the ratchet as tests: forward secrecy, post-compromise recovery,
and that every single-bit flip of a message is rejected without touching the state."""

from __future__ import annotations

import pytest

from crypto.envelope import InitialMessage, decode_message
from crypto.errors import DecryptionError, VoxError
from crypto.pqxdh import accept_session, initiate_session
from crypto.primitives import DeterministicRng
from crypto.ratchet.session import Session
from tests.crypto.support import make_device, make_pair


def test_forward_secrecy_old_ciphertexts_do_not_decrypt_with_current_state() -> None:
    alice, bob, rng = make_pair(b"s1")
    old = alice.encrypt(b"secret from the past", rng)
    assert bob.decrypt(old) == b"secret from the past"
    for _ in range(2):  # two DH round trips: the old chain keys are gone
        assert alice.decrypt(bob.encrypt(b"b", rng)) == b"b"
        assert bob.decrypt(alice.encrypt(b"a", rng)) == b"a"
    stolen = Session.from_bytes(bob.to_bytes())  # an attacker copies Bob's current state
    with pytest.raises(DecryptionError):
        stolen.decrypt(old)
    assert b"secret from the past" not in stolen.to_bytes()


def test_post_compromise_recovery_after_a_dh_round_trip() -> None:
    alice, bob, rng = make_pair(b"s2")
    stolen = Session.from_bytes(bob.to_bytes())
    before = alice.encrypt(b"still readable by the thief", rng)
    assert stolen.decrypt(before) == b"still readable by the thief"
    assert bob.decrypt(before) == b"still readable by the thief"
    # Bob replies (fresh ratchet key), Alice answers on a chain the thief cannot derive.
    reply = bob.encrypt(b"reply", rng)
    assert alice.decrypt(reply) == b"reply"
    after = alice.encrypt(b"healed", rng)
    assert bob.decrypt(after) == b"healed"
    # The thief followed every message to Bob and knows the old ratchet private key, but
    # not Bob's fresh one, so the new receiving chain is out of reach:
    with pytest.raises(DecryptionError):
        stolen.decrypt(after)


def _flips(data: bytes, step: int = 1) -> list[bytes]:
    out = []
    for bit in range(0, len(data) * 8, step):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        out.append(bytes(flipped))
    return out


def test_every_single_bit_flip_of_a_ratchet_message_fails_and_changes_nothing() -> None:
    alice, bob, rng = make_pair(b"s3")
    assert alice.decrypt(bob.encrypt(b"x", rng)) == b"x"
    message = alice.encrypt(b"a message of some length", rng)
    before = bob.to_bytes()
    for flipped in _flips(message):  # version, kind, header, length, ciphertext, tag
        with pytest.raises(VoxError):
            bob.decrypt(flipped)
        assert bob.to_bytes() == before
    assert bob.decrypt(message) == b"a message of some length"


def test_bit_flips_of_an_initial_message_are_refused() -> None:
    rng = DeterministicRng(b"s4")
    alice, bob = make_device("alice", 1, rng), make_device("bob", 2, rng)
    first = initiate_session(alice.local, bob.bundle(), rng=rng).encrypt(b"hi", rng)
    message = decode_message(first)
    assert isinstance(message, InitialMessage)
    prefix_end = len(first) - len(message.message.ciphertext) - 4 - 41
    # every bit outside the 1088-byte KEM ciphertext, and every 7th bit inside it
    kem_start = prefix_end - 1088
    for bit in range(len(first) * 8):
        if kem_start * 8 <= bit < prefix_end * 8 and bit % 7:
            continue
        flipped = bytearray(first)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(VoxError):
            accept_session(bob.local, bob.secrets(), bytes(flipped))
    assert accept_session(bob.local, bob.secrets(), first).body == b"hi"
