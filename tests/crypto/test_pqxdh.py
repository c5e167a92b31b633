"""PQXDH: session setup both ways, signature checks, prekey bookkeeping, typed failures.

The device/bundle builders live in ``tests/crypto/support.py``.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from crypto import primitives as p
from crypto.envelope import InitialMessage, RatchetMessage, decode_message
from crypto.errors import (
    AuthenticationFailed,
    BadSignature,
    DecodeError,
    InvalidPublicKey,
    InvalidValue,
    StateError,
    UnknownPrekey,
)
from crypto.keys import (
    SignedPrekeyPublic,
    X25519PublicKey,
)
from crypto.pqxdh import (
    AcceptedSession,
    PrekeySecrets,
    accept_session,
    associated_data,
    initiate_session,
)
from crypto.ratchet.session import Session
from tests.crypto.support import LOW_ORDER, Device, make_device, make_pair


def _setup(rng: p.Rng, **bundle_kw: bool) -> tuple[Device, Device, Session, bytes]:
    alice, bob = make_device("alice", 1, rng), make_device("bob", 2, rng)
    session = initiate_session(alice.local, bob.bundle(**bundle_kw), rng=rng)
    return alice, bob, session, session.encrypt(b"first", rng)


def test_alice_and_bob_agree_with_a_one_time_prekey() -> None:
    rng = p.DeterministicRng(b"t1")
    alice, bob, session, first = _setup(rng)
    accepted = accept_session(bob.local, bob.secrets(), first)
    assert accepted.body == b"first"
    assert accepted.consumed.one_time_prekey_id == 3
    assert accepted.consumed.kem_prekey_id == 2  # a one-time KEM prekey is consumed too
    assert accepted.session.peer == alice.local.public
    assert session.peer == bob.local.public
    assert accepted.session.associated_data == session.associated_data
    assert accepted.session.base_key == session.base_key
    assert session.decrypt(accepted.session.encrypt(b"reply", rng)) == b"reply"


def test_session_without_one_time_prekey_and_last_resort_kem_consumes_nothing() -> None:
    rng = p.DeterministicRng(b"t2")
    alice, bob = make_device("alice", 1, rng), make_device("bob", 2, rng, last_resort=True)
    session = initiate_session(alice.local, bob.bundle(one_time=False), rng=rng)
    message = decode_message(session.encrypt(b"x", rng))
    assert isinstance(message, InitialMessage)
    assert message.prefix.one_time_prekey_id is None
    accepted = accept_session(bob.local, bob.secrets(), message)
    assert accepted.body == b"x"
    assert (accepted.consumed.one_time_prekey_id, accepted.consumed.kem_prekey_id) == (None, None)


def test_associated_data_is_initiator_then_responder_identities() -> None:
    rng = p.DeterministicRng(b"t3")
    alice, bob, session, _ = _setup(rng)
    expected = b"".join(
        (
            b"\x00\x05alice\x00\x00\x00\x01",
            alice.account.public_key.to_bytes(),
            alice.local.identity_key.public_key.to_bytes(),
            b"\x00\x03bob\x00\x00\x00\x02",
            bob.account.public_key.to_bytes(),
            bob.local.identity_key.public_key.to_bytes(),
        )
    )
    assert session.associated_data == expected
    assert associated_data(alice.local.public, bob.local.public) == expected


def test_initial_messages_repeat_the_prefix_until_the_first_reply() -> None:
    rng = p.DeterministicRng(b"t4")
    _, bob, session, first = _setup(rng)
    second = session.encrypt(b"second", rng)
    assert isinstance(decode_message(second), InitialMessage)
    accepted = accept_session(bob.local, bob.secrets(), first)
    bob_session = accepted.session
    assert bob_session.decrypt(second) == b"second"  # same base key: the existing session
    assert session.awaiting_reply
    assert session.decrypt(bob_session.encrypt(b"ok", rng)) == b"ok"
    assert not session.awaiting_reply
    assert isinstance(decode_message(session.encrypt(b"third", rng)), RatchetMessage)


def test_an_initial_message_of_another_session_is_a_state_error() -> None:
    rng = p.DeterministicRng(b"t5")
    alice, bob, _, first = _setup(rng)
    other = initiate_session(alice.local, bob.bundle(), rng=rng).encrypt(b"other", rng)
    bob_session = accept_session(bob.local, bob.secrets(), first).session
    before = bob_session.to_bytes()
    with pytest.raises(StateError):
        bob_session.decrypt(other)
    assert bob_session.to_bytes() == before


def _resign_spk(device: Device, public: X25519PublicKey) -> SignedPrekeyPublic:
    data = device.local.identity_key.public_key.to_bytes() + b"\x00\x00\x00\x01" + public.to_bytes()
    return SignedPrekeyPublic(1, public, device.account.sign(b"VoxSignedPrekey-v1", data))


def _flip(data: bytes, index: int = 0) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


def test_every_bad_bundle_signature_is_refused() -> None:
    rng = p.DeterministicRng(b"t6")
    alice, bob = make_device("alice", 1, rng), make_device("bob", 2, rng)
    mallory = make_device("bob", 2, rng)
    good = bob.bundle()
    spk, kem = good.signed_prekey, good.kem_prekey
    bad_bundles = [
        replace(good, signed_prekey=replace(spk, signature=_flip(spk.signature))),
        replace(good, kem_prekey=replace(kem, signature=_flip(kem.signature, 63))),
        replace(good, signed_prekey=replace(spk, key_id=9)),
        replace(good, kem_prekey=replace(kem, last_resort=True)),
        replace(good, signed_prekey=mallory.signed.to_public()),  # another account signed it
        replace(good, kem_prekey=mallory.kem.to_public()),
        replace(good, identity_key=mallory.local.identity_key.public_key),  # swapped identity
        replace(good, account_key=mallory.account.public_key),
    ]
    for bundle in bad_bundles:
        with pytest.raises(BadSignature):
            initiate_session(alice.local, bundle, rng=rng)
    initiate_session(alice.local, good, rng=rng)


def test_a_low_order_signed_prekey_is_a_typed_key_agreement_error() -> None:
    rng = p.DeterministicRng(b"t7")
    alice, bob = make_device("alice", 1, rng), make_device("bob", 2, rng)
    bundle = replace(bob.bundle(), signed_prekey=_resign_spk(bob, X25519PublicKey(LOW_ORDER)))
    with pytest.raises(InvalidPublicKey):
        initiate_session(alice.local, bundle, rng=rng)


def test_a_low_order_base_key_in_an_initial_message_is_refused() -> None:
    rng = p.DeterministicRng(b"t8")
    _, bob, _, first = _setup(rng)
    message = decode_message(first)
    assert isinstance(message, InitialMessage)
    evil = InitialMessage(
        replace(message.prefix, base_key=X25519PublicKey(LOW_ORDER)), message.message
    )
    with pytest.raises(InvalidPublicKey):
        accept_session(bob.local, bob.secrets(), evil)


@pytest.mark.parametrize(
    ("drop", "kind", "key_id"),
    [("signed", "signed", 1), ("kem", "kem", 2), ("one_time", "one-time", 3)],
)
def test_an_initial_message_naming_an_unknown_prekey_is_refused(
    drop: str, kind: str, key_id: int
) -> None:
    rng = p.DeterministicRng(b"t9")
    _, bob, _, first = _setup(rng)
    held = bob.secrets()
    secrets = PrekeySecrets(
        {} if drop == "signed" else held.signed_prekeys,
        {} if drop == "kem" else held.kem_prekeys,
        {} if drop == "one_time" else held.one_time_prekeys,
    )
    with pytest.raises(UnknownPrekey) as info:
        accept_session(bob.local, secrets, first)
    assert (info.value.kind, info.value.key_id) == (kind, key_id)


def test_a_tampered_kem_ciphertext_fails_authentication() -> None:
    rng = p.DeterministicRng(b"t10")
    _, bob, _, first = _setup(rng)
    message = decode_message(first)
    assert isinstance(message, InitialMessage)
    ct = _flip(message.prefix.kem_ciphertext, 500)
    evil = InitialMessage(replace(message.prefix, kem_ciphertext=ct), message.message)
    with pytest.raises(AuthenticationFailed):
        accept_session(bob.local, bob.secrets(), evil.to_bytes())


def test_accepting_a_plain_ratchet_message_is_a_decode_error() -> None:
    _, bob, rng = make_pair(b"t11")
    reply = bob.encrypt(b"r", rng)
    device = make_device("bob", 2, rng)
    with pytest.raises(InvalidValue):
        accept_session(device.local, device.secrets(), reply)
    with pytest.raises(DecodeError):
        accept_session(device.local, device.secrets(), b"\x01\x02")


def test_initiator_and_responder_reprs_show_no_secrets() -> None:
    rng = p.DeterministicRng(b"t12")
    _, bob, _, first = _setup(rng)
    accepted: AcceptedSession = accept_session(bob.local, bob.secrets(), first)
    text = repr(accepted) + repr(bob.secrets()) + repr(bob.local)
    for secret in (
        bob.signed.private,
        bob.kem.seed,
        bob.one_time.private,
        bob.local.identity_key.private,
    ):
        assert secret.hex() not in text
        assert repr(secret)[2:-1] not in text
    assert "first" not in text
