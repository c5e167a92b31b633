"""Envelope version 2 (issue 9, defect 4): a fresh random nonce per encryption, and the
envelope's version and kind bytes inside the associated data.

Before version 2 the AES-GCM nonce was derived from the message key, so encrypting again from
an older copy of a state (a restored backup, a copied profile) reused (key, nonce): the XOR of
the two ciphertexts was the XOR of the two plaintexts.
"""

from __future__ import annotations

import pytest

from crypto.envelope import InitialMessage, RatchetMessage, decode_message
from crypto.errors import AuthenticationFailed, DecodeError, VoxError
from crypto.keys import DeviceAddress
from crypto.primitives import DeterministicRng
from crypto.ratchet.session import Session
from crypto.sender_keys import SenderKeyDistribution, SenderKeyMessage, SenderKeyState
from tests.crypto.support import make_device, make_pair

SECRET_A = b"attack at dawn!!" * 4
SECRET_B = b"retreat at noon!" * 4


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=False))


def _ratchet(data: bytes) -> RatchetMessage:
    message = decode_message(data)
    return message.message if isinstance(message, InitialMessage) else message


def test_encrypting_twice_from_a_restored_copy_of_a_session_uses_different_nonces() -> None:
    alice, bob, rng = make_pair(b"v2-restore")
    bob.decrypt(alice.encrypt(b"warm up", rng))
    backup = alice.to_bytes()
    first = alice.encrypt(SECRET_A)  # default rng: the operating system
    second = Session.from_bytes(backup).encrypt(SECRET_B)
    m1, m2 = _ratchet(first), _ratchet(second)
    assert m1.header == m2.header  # the same chain position: the same message key
    assert m1.nonce != m2.nonce
    assert len(m1.nonce) == 12
    # The keystreams differ, so the ciphertexts do not leak the plaintexts' XOR.
    assert _xor(m1.ciphertext, m2.ciphertext)[:16] != _xor(SECRET_A, SECRET_B)[:16]
    assert bob.decrypt(second)[: len(SECRET_B)] == SECRET_B


def test_encrypting_twice_from_a_restored_sender_key_state_uses_different_nonces() -> None:
    sender = SenderKeyState.create(b"g-restore", DeviceAddress("alice", 1))
    member = SenderKeyState.from_distribution(sender.distribution())
    backup = sender.to_bytes()
    m1 = sender.encrypt(SECRET_A)
    m2 = SenderKeyState.from_bytes(backup).encrypt(SECRET_B)
    assert (m1.key_id, m1.iteration) == (m2.key_id, m2.iteration)
    assert m1.nonce != m2.nonce and len(m1.nonce) == 12
    assert _xor(m1.ciphertext, m2.ciphertext)[:16] != _xor(SECRET_A, SECRET_B)[:16]
    assert member.decrypt(SenderKeyMessage.from_bytes(m2.to_bytes())) == SECRET_B


def test_the_nonce_comes_from_the_rng_after_the_ratchet_key() -> None:
    alice, bob, _ = make_pair(b"v2-order")
    bob_rng = DeterministicRng(b"bob draws")
    wire = bob.encrypt(b"reply", bob_rng)  # a new sending chain: ratchet key, then nonce
    expected = DeterministicRng(b"bob draws")
    expected(32)
    assert _ratchet(wire).nonce == expected(12)
    assert alice.decrypt(wire) == b"reply"


def _unchanged(session: Session, data: bytes) -> None:
    before = session.to_bytes()
    with pytest.raises(VoxError) as caught:
        session.decrypt(data)
    assert isinstance(caught.value, DecodeError | AuthenticationFailed)
    assert session.to_bytes() == before


def test_every_other_version_or_kind_byte_fails_and_changes_nothing() -> None:
    alice, bob, rng = make_pair(b"v2-tamper")
    bob.decrypt(alice.encrypt(b"leave the initial phase", rng))
    alice.decrypt(bob.encrypt(b"ok", rng))
    wire = alice.encrypt(b"tamper with me", rng)
    assert wire[:2] == b"\x02\x01"
    for index in (0, 1):
        for value in range(256):
            if value != wire[index]:
                _unchanged(bob, wire[:index] + bytes([value]) + wire[index + 1 :])
    assert bob.decrypt(wire) == b"tamper with me"


def test_an_initial_message_stripped_to_a_ratchet_message_fails() -> None:
    """The kind byte is authenticated: version 1 accepted the stripped message."""
    rng = DeterministicRng(b"v2-strip")
    alice_dev, bob_dev = make_device("alice", 1, rng), make_device("bob", 2, rng)
    from crypto.pqxdh import accept_session, initiate_session

    alice = initiate_session(alice_dev.local, bob_dev.bundle(), rng=rng)
    bob = accept_session(bob_dev.local, bob_dev.secrets(), alice.encrypt(b"one", rng)).session
    second = decode_message(alice.encrypt(b"two", rng))
    assert isinstance(second, InitialMessage)
    stripped = second.message.to_bytes()  # same header, nonce and ciphertext, kind 0x01
    _unchanged(bob, stripped)
    assert bob.decrypt(second.to_bytes()) == b"two"


def test_every_other_group_message_version_or_kind_byte_fails() -> None:
    sender = SenderKeyState.create(b"g-tamper", DeviceAddress("alice", 1))
    member = SenderKeyState.from_distribution(
        SenderKeyDistribution.from_bytes(sender.distribution().to_bytes())
    )
    wire = sender.encrypt(b"group secret").to_bytes()
    assert wire[:2] == b"\x02\x03"
    before = member.to_bytes()
    for index in (0, 1):
        for value in range(256):
            if value == wire[index]:
                continue
            tampered = wire[:index] + bytes([value]) + wire[index + 1 :]
            with pytest.raises(VoxError):
                member.decrypt(SenderKeyMessage.from_bytes(tampered))
            assert member.to_bytes() == before
    assert member.decrypt(SenderKeyMessage.from_bytes(wire)) == b"group secret"
