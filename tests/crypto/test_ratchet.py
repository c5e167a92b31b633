"""Double Ratchet behaviour: ordering, skipped keys and their bounds, replays, typed errors,
commit-on-success and exact state round trips."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.encoding import Writer
from crypto.envelope import RatchetMessage, decode_message
from crypto.errors import (
    AuthenticationFailed,
    DecodeError,
    DuplicateMessage,
    InvalidPublicKey,
    SenderMismatch,
    TooManySkipped,
    TrailingBytes,
    Truncated,
    UnsupportedVersion,
    VoxError,
)
from crypto.keys import X25519PublicKey
from crypto.ratchet.chain_key import ChainKey
from crypto.ratchet.header import Header
from crypto.ratchet.message_keys import MessageKey
from crypto.ratchet.root_chain import RootKey
from crypto.ratchet.session import SESSION_VERSION, RatchetConfig, Session
from tests.crypto.support import LOW_ORDER, make_pair


def _unchanged_after_failure(session: Session, data: bytes, error: type[VoxError]) -> VoxError:
    before = session.to_bytes()
    with pytest.raises(error) as info:
        session.decrypt(data)
    assert session.to_bytes() == before
    return info.value


def test_chain_and_root_kdfs_follow_the_documented_constructions() -> None:
    import hmac

    ck = ChainKey(bytes(range(32)), 4)
    assert ck.message_key() == MessageKey(hmac.digest(ck.key, b"\x01", "sha256"), 4)
    assert ck.next() == ChainKey(hmac.digest(ck.key, b"\x02", "sha256"), 5)
    root = RootKey(b"\x11" * 32)
    prk = hmac.digest(root.key, b"\x22" * 32, "sha256")
    t1 = hmac.digest(prk, b"VoxRatchet-v1-Root\x01", "sha256")
    t2 = hmac.digest(prk, t1 + b"VoxRatchet-v1-Root\x02", "sha256")
    assert root.advance(b"\x22" * 32) == (RootKey(t1), ChainKey(t2, 0))


def test_messages_flow_both_ways_with_dh_steps_and_symmetric_runs() -> None:
    alice, bob, rng = make_pair(b"r1")
    for round_ in range(5):
        for i in range(round_ + 1):
            assert bob.decrypt(alice.encrypt(b"a%d.%d" % (round_, i), rng)) == b"a%d.%d" % (
                round_,
                i,
            )
        for i in range(round_):
            assert alice.decrypt(bob.encrypt(b"b%d" % i, rng)) == b"b%d" % i


def test_out_of_order_within_a_chain_and_across_a_dh_step() -> None:
    alice, bob, rng = make_pair(b"r2")
    sent = [alice.encrypt(b"m%d" % i, rng) for i in range(5)]
    assert bob.decrypt(sent[3]) == b"m3"
    assert bob.skipped_count == 3  # "hello" was index 0, so m0..m2 are indices 1..3
    assert alice.decrypt(bob.encrypt(b"turn", rng)) == b"turn"
    later = alice.encrypt(b"new chain", rng)
    assert bob.decrypt(later) == b"new chain"  # DH step: stores m4's key from the header's pn
    assert bob.skipped_count == 4
    for i in (4, 0, 2, 1):
        assert bob.decrypt(sent[i]) == b"m%d" % i
    assert bob.skipped_count == 0


def test_replays_raise_duplicate_message_on_current_and_old_chains() -> None:
    alice, bob, rng = make_pair(b"r3")
    m = alice.encrypt(b"once", rng)
    assert bob.decrypt(m) == b"once"
    error = _unchanged_after_failure(bob, m, DuplicateMessage)
    assert isinstance(error, DuplicateMessage) and error.index == 1
    assert alice.decrypt(bob.encrypt(b"x", rng)) == b"x"
    assert bob.decrypt(alice.encrypt(b"y", rng)) == b"y"
    _unchanged_after_failure(bob, m, DuplicateMessage)  # m's chain is now an old chain


def test_a_gap_over_the_bound_raises_too_many_skipped() -> None:
    alice, bob, rng = make_pair(b"r4", config=RatchetConfig(max_skip=5, max_stored=8))
    sent = [alice.encrypt(b"%d" % i, rng) for i in range(8)]
    # bob's receiving chain is at index 1; message 7 needs 6 skipped keys.
    error = _unchanged_after_failure(bob, sent[6], TooManySkipped)
    assert isinstance(error, TooManySkipped) and (error.requested, error.limit) == (6, 5)
    assert bob.decrypt(sent[5]) == b"5"  # exactly at the bound is fine
    assert bob.skipped_count == 5


def test_a_gap_over_the_bound_in_the_previous_chain_is_refused() -> None:
    alice, bob, rng = make_pair(b"r5", config=RatchetConfig(max_skip=3, max_stored=10))
    assert alice.decrypt(bob.encrypt(b"b", rng)) == b"b"
    for i in range(4):
        bob.encrypt(b"lost %d" % i, rng)  # never delivered: pn becomes 5
    assert bob.decrypt(alice.encrypt(b"a", rng)) == b"a"
    # bob's next chain says pn = 5; alice received only index 0 of bob's old chain.
    error = _unchanged_after_failure(alice, bob.encrypt(b"c", rng), TooManySkipped)
    assert isinstance(error, TooManySkipped) and (error.requested, error.limit) == (4, 3)


def test_total_skipped_keys_are_bounded_and_the_oldest_evicted() -> None:
    alice, bob, rng = make_pair(b"r6", config=RatchetConfig(max_skip=10, max_stored=12))
    first_chain = [alice.encrypt(b"a%d" % i, rng) for i in range(9)]
    assert bob.decrypt(first_chain[8]) == b"a8"  # skips a0..a7 (indices 1..8): 8 keys
    assert bob.skipped_count == 8
    assert alice.decrypt(bob.encrypt(b"b", rng)) == b"b"
    second_chain = [alice.encrypt(b"c%d" % i, rng) for i in range(8)]
    assert bob.decrypt(second_chain[7]) == b"c7"  # 7 more keys: 15 > 12, 3 oldest evicted
    assert bob.skipped_count == 12
    for evicted in first_chain[:3]:
        _unchanged_after_failure(bob, evicted, DuplicateMessage)
    assert bob.decrypt(first_chain[3]) == b"a3"
    assert bob.decrypt(second_chain[0]) == b"c0"


def test_a_low_order_ratchet_key_is_a_typed_error_and_changes_nothing() -> None:
    alice, bob, rng = make_pair(b"r7")
    m = decode_message(alice.encrypt(b"x", rng))
    inner = m if isinstance(m, RatchetMessage) else m.message
    evil_header = Header(X25519PublicKey(LOW_ORDER), 0, 0)
    evil = RatchetMessage(evil_header, inner.nonce, inner.ciphertext).to_bytes()
    _unchanged_after_failure(bob, evil, InvalidPublicKey)


def test_a_payload_naming_another_sender_raises_sender_mismatch() -> None:
    alice, bob, rng = make_pair(b"r8")
    state = alice.to_bytes()
    # The local address is the first field after the version byte: "alice" then u32 1.
    assert state[1:12] == b"\x00\x05alice\x00\x00\x00\x01"
    forged = Session.from_bytes(state[:11] + b"\x09" + state[12:])
    error = _unchanged_after_failure(bob, forged.encrypt(b"hi", rng), SenderMismatch)
    assert isinstance(error, SenderMismatch)
    assert (error.expected, error.got) == ("alice:1", "alice:9")


def test_wrong_session_or_garbage_fails_without_changing_state() -> None:
    alice, bob, rng = make_pair(b"r9")
    _, other_bob, other_rng = make_pair(b"r9-other")
    foreign = other_bob.encrypt(b"x", other_rng)
    _unchanged_after_failure(alice, foreign, AuthenticationFailed)
    _unchanged_after_failure(alice, b"", Truncated)
    _unchanged_after_failure(alice, b"\x03\x01", UnsupportedVersion)
    good = bob.encrypt(b"g", rng)
    _unchanged_after_failure(alice, good + b"\x00", TrailingBytes)
    assert alice.decrypt(good) == b"g"


def test_session_state_round_trips_exactly_at_every_step() -> None:
    alice, bob, rng = make_pair(b"r10", config=RatchetConfig(max_skip=50, max_stored=60))
    pending: list[bytes] = []
    for i in range(12):
        for s in (alice, bob):
            data = s.to_bytes()
            assert Session.from_bytes(data).to_bytes() == data
        if i % 3 == 0:
            pending.append(alice.encrypt(b"late %d" % i, rng))
        assert bob.decrypt(alice.encrypt(b"a", rng)) == b"a"
        bob = Session.from_bytes(bob.to_bytes())
        if i % 2:
            assert alice.decrypt(bob.encrypt(b"b", rng)) == b"b"
            alice = Session.from_bytes(alice.to_bytes())
    assert bob.skipped_count == len(pending)
    for m in pending:
        bob.decrypt(m)


def _reference_state(s: Session) -> bytes:
    """The session state encoding field by field with the Writer (the documented layout)."""
    w = Writer().u8(SESSION_VERSION)
    s.local.write(w)
    s.peer.write(w)
    config = s._config
    w.bytes16(s.associated_data).u16(config.max_skip).u16(config.max_stored)
    w.u32(config.max_skipped_age).u64(s._clock)
    w.raw(s._root.key).raw(s._self_key.private)
    w.u8(int(s._remote is not None))
    if s._remote is not None:
        w.raw(s._remote.to_bytes())
    for chain in (s._sending, s._receiving):
        w.u8(int(chain is not None))
        if chain is not None:
            w.raw(chain.key).u32(chain.index)
    w.u32(s._previous_counter).raw(s.base_key.to_bytes()).raw(s.initial_digest)
    w.u8(int(s._pending is not None))
    if s._pending is not None:
        s._pending.write(w)
    w.u8(len(s._previous_remote))
    for key in s._previous_remote:
        w.raw(key)
    w.u16(len(s._skipped))
    for ratchet_key, mk, stored_at in s._skipped:
        w.raw(ratchet_key).u32(mk.index).raw(mk.key).u64(stored_at)
    return w.finish()


def test_session_state_encoding_and_copies_at_every_step() -> None:
    # The assembled encoding is the documented layout (states stored by earlier versions
    # still load), and a copy advances without touching the original.
    alice, bob, rng = make_pair(b"r10b", config=RatchetConfig(max_skip=50, max_stored=60))
    late: list[bytes] = []
    for i in range(10):
        for s in (alice, bob):
            assert s.to_bytes() == _reference_state(s)
            before, copy = s.to_bytes(), s.copy()
            assert copy.to_bytes() == before
            with contextlib.suppress(VoxError):
                copy.encrypt(b"from the copy", rng)
            assert s.to_bytes() == before
        if i % 3 == 0:
            late.append(alice.encrypt(b"late %d" % i, rng))
        trial = bob.copy()
        assert trial.decrypt(alice.encrypt(b"a", rng), now=1000 + i) == b"a"
        assert bob.to_bytes() != trial.to_bytes()
        bob = trial
        if i % 2:
            alice = alice.copy()
            assert alice.decrypt(bob.encrypt(b"b", rng)) == b"b"
    assert bob.skipped_count == len(late) and bob.to_bytes() == _reference_state(bob)


def test_copies_share_nothing_observable_when_either_side_uses_or_expires_skipped_keys() -> None:
    # Copies share the skipped-key map and the previous ratchet keys until one side changes
    # them: whichever side changes them, the other keeps its own state exactly.
    alice, bob, rng = make_pair(b"r10c", config=RatchetConfig(max_skipped_age=100))
    late = [alice.encrypt(b"late %d" % i, rng) for i in range(3)]
    assert bob.decrypt(alice.encrypt(b"now", rng), now=1000) == b"now"
    alice.decrypt(bob.encrypt(b"turn", rng))  # a DH step: bob remembers alice's old key
    assert bob.decrypt(alice.encrypt(b"next", rng), now=1001) == b"next"
    assert bob.skipped_count == 3
    before = bob.to_bytes()

    copy = bob.copy()  # the copy uses a skipped key: the original keeps it
    assert copy.decrypt(late[0], now=1002) == b"late 0"
    assert copy.skipped_count == 2 and bob.skipped_count == 3 and bob.to_bytes() == before
    expired = bob.copy()  # the copy expires every skipped key: the original keeps them
    assert expired.expire_skipped(5000) == 3
    assert expired.skipped_count == 0 and bob.to_bytes() == before
    turned = bob.copy()  # the copy takes a DH step: the original's previous keys stay
    alice.decrypt(turned.encrypt(b"again", rng))
    assert turned.decrypt(alice.encrypt(b"after", rng)) == b"after"
    assert bob.to_bytes() == before

    kept = bob.copy()  # the original changes: the copy is untouched
    assert bob.decrypt(late[1], now=1003) == b"late 1"
    assert kept.to_bytes() == before
    assert kept.decrypt(late[1], now=1003) == b"late 1"
    assert kept.to_bytes() == bob.to_bytes()
    with pytest.raises(DuplicateMessage):
        bob.decrypt(late[1])


def test_session_decoder_rejects_bad_versions_truncation_and_trailing_bytes() -> None:
    alice, _, _ = make_pair(b"r11")
    data = alice.to_bytes()
    with pytest.raises(UnsupportedVersion):
        Session.from_bytes(b"\x03" + data[1:])
    with pytest.raises(Truncated):
        Session.from_bytes(data[:-1])
    with pytest.raises(TrailingBytes):
        Session.from_bytes(data + b"\x00")


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400))
def test_session_decoder_raises_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        Session.from_bytes(data)


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=0, max_value=255))
def test_mutated_session_states_decode_or_raise_decode_error(index: int, value: int) -> None:
    data = bytearray(_STATE)
    data[index % len(data)] = value
    with contextlib.suppress(DecodeError):
        Session.from_bytes(bytes(data))


_STATE = make_pair(b"state")[0].to_bytes()


def test_session_repr_shows_no_key_bytes() -> None:
    alice, bob, rng = make_pair(b"r12")
    bob.decrypt(alice.encrypt(b"x", rng))
    for s in (alice, bob):
        text = repr(s)
        state = s.to_bytes()
        # no 8-byte window of the serialized secrets appears in the repr, hex or raw
        for i in range(0, len(state) - 8, 4):
            window = state[i : i + 8]
            assert window.hex() not in text
        assert "Session(" in text


def test_ratchet_key_types_never_print_their_bytes() -> None:
    from crypto.envelope import Payload
    from crypto.keys import DeviceAddress
    from crypto.primitives import X25519KeyPair

    secret = bytes(range(100, 132))
    objects = [
        RootKey(secret),
        ChainKey(secret, 3),
        MessageKey(secret, 3),
        X25519KeyPair(secret),
        Payload(DeviceAddress("bob", 1), secret),
    ]
    for obj in objects:
        text = repr(obj)
        assert secret.hex()[:16] not in text and repr(secret)[2:18] not in text, text


def test_a_session_without_a_peer_ratchet_key_cannot_send() -> None:
    from crypto.errors import StateError
    from crypto.keys import DeviceAddress, Ed25519PublicKey, PeerDevice
    from crypto.primitives import X25519KeyPair

    key = X25519KeyPair(bytes(range(1, 33)))
    peer = PeerDevice(
        DeviceAddress("bob", 1), Ed25519PublicKey(bytes(range(32))), X25519PublicKey(key.public)
    )
    session = Session(
        local=DeviceAddress("alice", 1),
        peer=peer,
        associated_data=b"ad",
        root_key=RootKey(bytes(32)),
        self_key=key,
        remote_key=None,
        sending=None,
        base_key=X25519PublicKey(key.public),
        initial_digest=bytes(32),
        pending=None,
        config=RatchetConfig(),
    )
    with pytest.raises(StateError):
        session.encrypt(b"x")
    assert Session.from_bytes(session.to_bytes()).to_bytes() == session.to_bytes()


def test_ratchet_config_limits_are_u16() -> None:
    from crypto.errors import InvalidValue

    with pytest.raises(InvalidValue):
        RatchetConfig(max_skip=70_000)
    with pytest.raises(InvalidValue):
        RatchetConfig(max_stored=-1)


def test_a_reflected_initial_message_does_not_decrypt_for_its_sender() -> None:
    alice, _, rng = make_pair(b"r13")
    own = alice.encrypt(b"to bob", rng)  # still an initial message: no reply yet
    _unchanged_after_failure(alice, own, AuthenticationFailed)


def test_a_pinned_encapsulation_must_have_ml_kem_sizes() -> None:
    from crypto.errors import InvalidValue
    from crypto.pqxdh import initiate_session_with_encapsulation
    from crypto.primitives import DeterministicRng
    from tests.crypto.support import make_device

    rng = DeterministicRng(b"r14")
    alice, bob = make_device("alice", 1, rng), make_device("bob", 2, rng)
    with pytest.raises(InvalidValue):
        initiate_session_with_encapsulation(alice.local, bob.bundle(), (b"ct", bytes(32)))
