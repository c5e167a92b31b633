from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

from crypto.errors import (
    AuthenticationFailed,
    DecodeError,
    DecryptionError,
    DuplicateMessage,
    SenderMismatch,
    StateError,
    TooManySkipped,
    UnknownSenderKey,
    UnsupportedVersion,
)
from crypto.keys import DeviceAddress
from crypto.primitives import DeterministicRng
from crypto.sender_keys import (
    MAX_SKIP,
    MAX_STATES_PER_SENDER,
    SenderKeyDistribution,
    SenderKeyMessage,
    SenderKeyRecord,
    SenderKeyState,
)

GROUP = b"group-0123456789"
ALICE = DeviceAddress("alice", 1)
BOB = DeviceAddress("bob", 7)


def pair(seed: bytes = b"pair") -> tuple[SenderKeyState, SenderKeyState]:
    sending = SenderKeyState.create(GROUP, ALICE, rng=DeterministicRng(seed))
    receiving = SenderKeyState.from_distribution(
        SenderKeyDistribution.from_bytes(sending.distribution().to_bytes())
    )
    return sending, receiving


def test_a_member_decrypts_what_the_sender_encrypted() -> None:
    alice, bob_view = pair()
    for i in range(3):
        message = alice.encrypt(f"hello {i}".encode())
        wire = message.to_bytes()
        assert SenderKeyMessage.from_bytes(wire) == message
        assert bob_view.decrypt(SenderKeyMessage.from_bytes(wire)) == f"hello {i}".encode()
    assert (alice.iteration, bob_view.iteration) == (3, 3)


def test_distribution_and_message_codecs_round_trip() -> None:
    alice, _ = pair()
    distribution = alice.distribution()
    assert SenderKeyDistribution.from_bytes(distribution.to_bytes()) == distribution
    assert len(distribution.to_bytes()) == 1 + 2 + 16 + 2 + 5 + 4 + 4 + 4 + 32 + 33
    message = alice.encrypt(b"x")
    assert message.to_bytes()[: len(message.header())] == message.header()
    assert len(message.to_bytes()) == len(message.header()) + 12 + 4 + 1 + 16 + 64


def test_state_round_trips_exactly_for_sending_and_receiving_states() -> None:
    alice, bob_view = pair()
    messages = [alice.encrypt(b"m%d" % i) for i in range(6)]
    bob_view.decrypt(messages[5])
    bob_view.decrypt(messages[1])
    for state in (alice, bob_view):
        data = state.to_bytes()
        again = SenderKeyState.from_bytes(data)
        assert again.to_bytes() == data
    restored = SenderKeyState.from_bytes(bob_view.to_bytes())
    assert restored.skipped_count == 4
    assert restored.decrypt(messages[3]) == b"m3"


def test_out_of_order_messages_decrypt_once_and_duplicates_are_rejected() -> None:
    alice, bob_view = pair()
    messages = [alice.encrypt(b"m%d" % i) for i in range(5)]
    for i in (4, 0, 2, 3, 1):
        assert bob_view.decrypt(messages[i]) == b"m%d" % i
    for message in messages:
        before = bob_view.to_bytes()
        with pytest.raises(DuplicateMessage) as info:
            bob_view.decrypt(message)
        assert info.value.index == message.iteration
        assert bob_view.to_bytes() == before


def test_a_gap_over_the_bound_is_rejected_and_leaves_the_state_unchanged() -> None:
    alice, bob_view = pair()
    for _ in range(MAX_SKIP + 1):
        alice.encrypt(b"")
    far = alice.encrypt(b"far")
    before = bob_view.to_bytes()
    with pytest.raises(TooManySkipped) as info:
        bob_view.decrypt(far)
    assert (info.value.requested, info.value.limit) == (MAX_SKIP + 1, MAX_SKIP)
    assert bob_view.to_bytes() == before


def test_a_gap_at_the_bound_is_accepted_and_old_skipped_keys_are_evicted() -> None:
    alice, bob_view = pair()
    first = alice.encrypt(b"first")
    for _ in range(MAX_SKIP - 1):
        alice.encrypt(b"")
    bob_view.decrypt(alice.encrypt(b"edge"))
    assert bob_view.skipped_count == MAX_SKIP
    bob_view.decrypt(alice.encrypt(b"next"))
    late = alice.encrypt(b"late")
    for _ in range(3):
        alice.encrypt(b"")
    bob_view.decrypt(alice.encrypt(b"skip three more"))
    assert bob_view.skipped_count == MAX_SKIP
    with pytest.raises(DuplicateMessage):
        bob_view.decrypt(first)  # evicted: the oldest skipped keys go first
    assert bob_view.decrypt(late) == b"late"


def test_flipping_any_bit_fails_and_leaves_the_state_byte_identical() -> None:
    alice, bob_view = pair()
    alice.encrypt(b"skipped")
    wire = alice.encrypt(b"secret payload").to_bytes()
    before = bob_view.to_bytes()
    for i in range(len(wire) * 8):
        flipped = bytearray(wire)
        flipped[i // 8] ^= 1 << (i % 8)
        try:
            message = SenderKeyMessage.from_bytes(bytes(flipped))
        except DecodeError:
            continue
        with pytest.raises((DecryptionError, StateError)):
            bob_view.decrypt(message)
        assert bob_view.to_bytes() == before
    assert bob_view.decrypt(SenderKeyMessage.from_bytes(wire)) == b"secret payload"


def test_a_member_holding_the_chain_key_cannot_forge_the_senders_messages() -> None:
    alice, bob_view = pair()
    _, carol_view = pair()
    # Mallory knows Alice's chain (she is a member) but not Alice's signing key.
    mallory = SenderKeyState.from_bytes(alice.to_bytes())
    forged_key = SenderKeyState.create(GROUP, ALICE, rng=DeterministicRng(b"mallory"))
    genuine = mallory.encrypt(b"pay mallory")
    forged = SenderKeyMessage(
        genuine.group_id,
        genuine.sender,
        genuine.key_id,
        genuine.iteration,
        genuine.nonce,
        genuine.ciphertext,
        forged_key.encrypt(b"").signature,
    )
    before = bob_view.to_bytes()
    with pytest.raises(AuthenticationFailed):
        bob_view.decrypt(forged)
    assert bob_view.to_bytes() == before
    del carol_view


def test_messages_for_another_group_sender_or_key_are_refused() -> None:
    alice, bob_view = pair()
    other_group = SenderKeyState.create(b"other-group", ALICE, rng=DeterministicRng(b"g"))
    other_sender = SenderKeyState.create(GROUP, BOB, rng=DeterministicRng(b"s"))
    with pytest.raises(SenderMismatch):
        bob_view.decrypt(other_group.encrypt(b"x"))
    with pytest.raises(SenderMismatch):
        bob_view.decrypt(other_sender.encrypt(b"x"))
    rotated = alice.rotate(rng=DeterministicRng(b"rotation"))
    assert rotated.key_id != alice.key_id
    with pytest.raises(UnknownSenderKey) as info:
        bob_view.decrypt(rotated.encrypt(b"after rotation"))
    assert info.value.key_id == rotated.key_id


def test_rotation_with_a_colliding_random_key_id_draws_again() -> None:
    alice = SenderKeyState.create(GROUP, ALICE, rng=DeterministicRng(b"same"))
    # The same seed would give the same key id; rotate must avoid it.
    rotated = SenderKeyState.create(
        GROUP, ALICE, rng=DeterministicRng(b"same"), avoid_key_id=alice.key_id
    )
    assert rotated.key_id != alice.key_id


def test_roles_are_enforced() -> None:
    alice, bob_view = pair()
    with pytest.raises(StateError):
        bob_view.encrypt(b"x")
    with pytest.raises(StateError):
        bob_view.distribution()
    with pytest.raises(StateError):
        alice.decrypt(alice.encrypt(b"x"))


def test_repr_never_shows_key_material() -> None:
    alice, bob_view = pair()
    distribution = alice.distribution()
    secrets = [distribution.chain_key.hex(), alice.to_bytes().hex()[-200:]]
    for obj in (alice, bob_view, distribution):
        text = repr(obj)
        assert distribution.chain_key.hex() not in text
        assert secrets[1] not in text
    assert "chain_key" not in repr(distribution)


def test_state_decoder_rejects_unknown_versions_and_inconsistent_keys() -> None:
    alice, _ = pair()
    data = bytearray(alice.to_bytes())
    data[0] = 3
    with pytest.raises(UnsupportedVersion):
        SenderKeyState.from_bytes(bytes(data))
    # Replace the public signing key of a sending state with another key.
    other = SenderKeyState.create(GROUP, ALICE, rng=DeterministicRng(b"other"))
    # (the tail: typed key (33) || u64 clock || u16 skipped count)
    mixed = alice.to_bytes()[:-43] + other.to_bytes()[-43:]
    with pytest.raises(DecodeError):
        SenderKeyState.from_bytes(mixed)


def test_a_decoded_sending_state_loads_its_signing_seed_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Decoding checks that the seed gives the public key, and that loaded key signs: one
    scalar multiplication per decode + encrypt, not two (the SDK decodes its own state for
    every group message it sends)."""
    from crypto import primitives

    alice, bob = pair()
    data = alice.to_bytes()
    loads = [0]
    real_public, real_signer = primitives.ed25519_public, primitives.Ed25519Signer

    def counting_public(private: bytes) -> bytes:
        loads[0] += 1
        return real_public(private)

    def counting_signer(private: bytes) -> primitives.Ed25519Signer:
        loads[0] += 1
        return real_signer(private)

    monkeypatch.setattr(primitives, "ed25519_public", counting_public)
    monkeypatch.setattr(primitives, "Ed25519Signer", counting_signer)
    decoded = SenderKeyState.from_bytes(data)
    message = decoded.encrypt(b"hello")
    assert loads[0] == 1
    assert bob.decrypt(SenderKeyMessage.from_bytes(message.to_bytes())) == b"hello"
    assert SenderKeyState.from_bytes(decoded.to_bytes()).to_bytes() == decoded.to_bytes()


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_decoders_raise_only_decode_error_on_arbitrary_bytes(data: bytes) -> None:
    for decode in (
        SenderKeyMessage.from_bytes,
        SenderKeyDistribution.from_bytes,
        SenderKeyState.from_bytes,
    ):
        with contextlib.suppress(DecodeError):
            decode(data)


@settings(max_examples=200)
@given(st.integers(min_value=0, max_value=180), st.binary(min_size=1, max_size=8))
def test_decoders_raise_only_decode_error_on_mutated_valid_encodings(at: int, junk: bytes) -> None:
    alice, bob_view = pair()
    message = alice.encrypt(b"payload")
    bob_view.decrypt(alice.encrypt(b"x"))
    for decode, data in (
        (SenderKeyMessage.from_bytes, message.to_bytes()),
        (SenderKeyDistribution.from_bytes, alice.distribution().to_bytes()),
        (SenderKeyState.from_bytes, alice.to_bytes()),
        (SenderKeyState.from_bytes, bob_view.to_bytes()),
    ):
        mutated = data[:at] + junk + data[at + len(junk) :]
        with contextlib.suppress(DecodeError):
            decode(mutated)


def test_a_record_keeps_old_keys_for_late_messages_after_rotation() -> None:
    alice, _ = pair()
    record = SenderKeyRecord()
    record.add(alice.distribution())
    in_flight = alice.encrypt(b"sent before rotation")
    rotated = alice.rotate(rng=DeterministicRng(b"rotate"))
    record.add(rotated.distribution())
    assert record.key_ids == (rotated.key_id, alice.key_id)
    assert record.decrypt(rotated.encrypt(b"new")) == b"new"
    assert record.decrypt(in_flight) == b"sent before rotation"
    restored = SenderKeyRecord.from_bytes(record.to_bytes())
    assert restored.to_bytes() == record.to_bytes()
    record.drop_older()
    with pytest.raises(UnknownSenderKey):
        record.decrypt(alice.encrypt(b"late"))


def test_a_record_is_bounded_idempotent_and_single_sender() -> None:
    state = SenderKeyState.create(GROUP, ALICE, rng=DeterministicRng(b"r0"))
    record = SenderKeyRecord()
    first = record.add(state.distribution())
    first.decrypt(state.encrypt(b"advance"))
    record.add(state.distribution())  # a re-sent distribution keeps the advanced state
    assert record.state(state.key_id).iteration == 1
    for i in range(MAX_STATES_PER_SENDER + 2):
        state = state.rotate(rng=DeterministicRng(b"r%d" % (i + 1)))
        record.add(state.distribution())
    assert len(record.key_ids) == MAX_STATES_PER_SENDER
    assert record.key_ids[0] == state.key_id
    bob_key = SenderKeyState.create(GROUP, BOB, rng=DeterministicRng(b"bob"))
    with pytest.raises(SenderMismatch):
        record.add(bob_key.distribution())
    with pytest.raises(StateError):
        SenderKeyRecord([bob_key])
    assert "chain" not in repr(record)


@settings(max_examples=150)
@given(st.binary(max_size=200))
def test_record_decoder_raises_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        SenderKeyRecord.from_bytes(data)


# --- a three-member group under loss, duplication, reordering and removal ---------------

MEMBERS = (DeviceAddress("alice", 1), DeviceAddress("bob", 2), DeviceAddress("carol", 3))


@dataclass
class Sent:
    sender: DeviceAddress
    wire: bytes
    plaintext: bytes
    delivered: set[DeviceAddress] = field(default_factory=set)
    dropped: bool = False


class GroupMachine(RuleBasedStateMachine):
    """Every delivered message decrypts exactly once; duplicates and tampering are refused
    without changing state; after carol is removed and keys rotate she reads nothing new."""

    sent = Bundle("sent")

    @initialize()
    def setup(self) -> None:
        self.rng = DeterministicRng(b"group machine")
        self.members = list(MEMBERS)
        self.own = {m: SenderKeyState.create(GROUP, m, rng=self.rng) for m in MEMBERS}
        # receiving[recipient][sender] -> record of that sender's keys (newest first)
        self.receiving: dict[DeviceAddress, dict[DeviceAddress, SenderKeyRecord]] = {
            r: {} for r in MEMBERS
        }
        for sender in MEMBERS:
            self._distribute(sender)
        self.removed: DeviceAddress | None = None
        self.after_removal: list[Sent] = []
        self.burst_done = False
        self.sends = 0
        self.log: list[Sent] = []

    def _distribute(self, sender: DeviceAddress) -> None:
        wire = self.own[sender].distribution().to_bytes()
        for recipient in self.members:
            if recipient != sender:
                record = self.receiving[recipient].setdefault(sender, SenderKeyRecord())
                record.add(SenderKeyDistribution.from_bytes(wire))

    def _lookup(self, recipient: DeviceAddress, message: SenderKeyMessage) -> SenderKeyState:
        record = self.receiving[recipient].get(message.sender)
        if record is None:
            raise UnknownSenderKey(message.key_id)
        return record.state(message.key_id)

    @rule(target=sent, who=st.integers(0, 2), text=st.binary(max_size=24))
    def send(self, who: int, text: bytes) -> Sent:
        sender = MEMBERS[who]
        if sender not in self.members:
            sender = self.members[0]
        message = self.own[sender].encrypt(text)
        self.sends += 1
        record = Sent(sender, message.to_bytes(), text)
        self.log.append(record)
        if self.removed is not None:
            self.after_removal.append(record)
        return record

    @rule(record=sent, who=st.integers(0, 2))
    def deliver(self, record: Sent, who: int) -> None:
        recipient = MEMBERS[who]
        if recipient == record.sender or recipient not in self.members:
            return
        message = SenderKeyMessage.from_bytes(record.wire)
        if record.sender not in self.members:
            with pytest.raises(UnknownSenderKey):  # the removed member's key was forgotten
                self._lookup(recipient, message)
            return
        state = self._lookup(recipient, message)
        if recipient in record.delivered:
            before = state.to_bytes()
            with pytest.raises(DuplicateMessage):
                state.decrypt(message)
            assert state.to_bytes() == before
            event("duplicate")
        elif message.iteration - state.iteration > MAX_SKIP:
            before = state.to_bytes()
            with pytest.raises(TooManySkipped):  # out of bounds: refused, state unchanged
                state.decrypt(message)
            event("out of bounds")
            assert state.to_bytes() == before
        else:
            if message.iteration < state.iteration:
                event("out of order")
            assert state.decrypt(message) == record.plaintext
            record.delivered.add(recipient)

    @precondition(lambda self: not self.burst_done and self.sends >= 6)
    @rule(who=st.integers(0, 2))
    def burst_lost_in_transit(self, who: int) -> None:
        """More messages than the skip bound are lost: later ones are out of bounds."""
        sender = MEMBERS[who] if MEMBERS[who] in self.members else self.members[0]
        for _ in range(MAX_SKIP + 1):
            self.own[sender].encrypt(b"lost")
        self.burst_done = True

    @rule(who=st.integers(0, 2), seed=st.randoms(use_true_random=False))
    def deliver_pending_shuffled(self, who: int, seed: random.Random) -> None:
        """Everything still pending for one member arrives at once, in a random order."""
        pending = [r for r in self.log if MEMBERS[who] not in r.delivered and not r.dropped]
        seed.shuffle(pending)
        for record in pending:
            self.deliver(record, who)

    @rule(record=consumes(sent))
    def drop(self, record: Sent) -> None:
        """The network loses the message for whoever has not received it yet."""
        record.dropped = True

    @rule(record=sent, who=st.integers(0, 2), bit=st.integers(0, 10_000))
    def tamper(self, record: Sent, who: int, bit: int) -> None:
        recipient = MEMBERS[who]
        if recipient == record.sender or recipient not in self.members:
            return
        flipped = bytearray(record.wire)
        index = bit % (len(flipped) * 8)
        flipped[index // 8] ^= 1 << (index % 8)
        try:
            message = SenderKeyMessage.from_bytes(bytes(flipped))
            state = self._lookup(recipient, message)
        except (DecodeError, UnknownSenderKey):
            return
        before = state.to_bytes()
        with pytest.raises(DecryptionError):
            state.decrypt(message)
        assert state.to_bytes() == before

    @precondition(lambda self: self.removed is None)
    @rule()
    def remove_carol(self) -> None:
        carol = MEMBERS[2]
        self.removed = carol
        self.members.remove(carol)
        for member in self.members:
            del self.receiving[member][carol]  # forget carol's keys
            self.own[member] = self.own[member].rotate(rng=self.rng)
            self._distribute(member)

    @invariant()
    def removed_member_reads_nothing_sent_after_removal(self) -> None:
        if self.removed is None:
            return
        for record in self.after_removal:
            message = SenderKeyMessage.from_bytes(record.wire)
            with pytest.raises(UnknownSenderKey):
                self._lookup(self.removed, message)
            # Even using every state she still holds, nothing decrypts.
            for record_of_sender in self.receiving[self.removed].values():
                for key_id in record_of_sender.key_ids:
                    with pytest.raises(DecryptionError):
                        record_of_sender.state(key_id).decrypt(message)

    @invariant()
    def states_round_trip(self) -> None:
        for records in self.receiving.values():
            for record in records.values():
                data = record.to_bytes()
                assert SenderKeyRecord.from_bytes(data).to_bytes() == data


GroupMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
test_three_member_group_under_loss_duplication_reordering_and_removal = GroupMachine.TestCase


def test_a_skipped_group_message_key_expires_after_the_age_limit() -> None:
    from crypto.sender_keys import MAX_SKIPPED_AGE

    alice, bob_view = pair(b"age")
    late = alice.encrypt(b"late")
    t0 = 1_800_000_000
    assert bob_view.decrypt(alice.encrypt(b"on time"), now=t0) == b"on time"
    assert bob_view.skipped_count == 1
    restored = SenderKeyState.from_bytes(bob_view.to_bytes())
    assert restored.to_bytes() == bob_view.to_bytes()
    before = bob_view.to_bytes()
    with pytest.raises(DuplicateMessage):
        bob_view.decrypt(late, now=t0 + MAX_SKIPPED_AGE + 1)
    assert bob_view.to_bytes() == before
    assert bob_view.decrypt(late, now=t0 + MAX_SKIPPED_AGE) == b"late"
    assert restored.expire_skipped(t0 + MAX_SKIPPED_AGE + 1) == 1
    assert restored.skipped_count == 0


def test_a_version_1_sender_key_state_still_loads_and_its_keys_start_aging() -> None:
    from crypto.sender_keys import MAX_SKIPPED_AGE

    alice, bob_view = pair(b"age-v1")
    late = alice.encrypt(b"late")
    bob_view.decrypt(alice.encrypt(b"x"))  # no clock given: clock 0, key age unknown
    v2 = bob_view.to_bytes()
    # Version 1 had no clock and no key ages: drop them (u64 clock, then u64 per key).
    head, tail = v2[: -(8 + 2 + 44)], v2[-(2 + 44) :]
    assert v2[-(8 + 2 + 44) : -(2 + 44)] == bytes(8)
    v1 = b"\x01" + head[1:] + tail[:-8]
    loaded = SenderKeyState.from_bytes(v1)
    assert loaded.skipped_count == 1 and loaded.to_bytes() == v2
    assert loaded.expire_skipped(1_800_000_000) == 0  # starts aging now
    assert loaded.decrypt(late, now=1_800_000_000 + MAX_SKIPPED_AGE) == b"late"
