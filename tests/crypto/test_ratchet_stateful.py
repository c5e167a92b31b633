"""Stateful property test: Alice and Bob over a link that drops, duplicates, reorders and
corrupts. Every delivered message decrypts exactly once; replays and corrupted copies are
rejected with a typed error and leave the state byte-identical; state always round-trips."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from crypto.errors import DecryptionError, VoxError
from crypto.pqxdh import accept_session, initiate_session
from crypto.primitives import DeterministicRng
from crypto.ratchet.session import Session
from tests.crypto.support import Device, make_device


@dataclass
class InFlight:
    to_bob: bool
    data: bytes
    body: bytes


class TwoParties(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.rng = DeterministicRng(b"stateful")
        alice = make_device("alice", 1, self.rng)
        self.bob_device: Device = make_device("bob", 2, self.rng)
        self.alice: Session = initiate_session(alice.local, self.bob_device.bundle(), rng=self.rng)
        self.bob: Session | None = None
        self.in_flight: list[InFlight] = []
        self.delivered: list[InFlight] = []
        self.counter = 0

    def _receiver(self, to_bob: bool) -> Session | None:
        return self.bob if to_bob else self.alice

    @rule(to_bob=st.booleans())
    def send(self, to_bob: bool) -> None:
        sender = self.alice if to_bob else self.bob
        if sender is None:
            return
        self.counter += 1
        body = b"message %d" % self.counter
        self.in_flight.append(InFlight(to_bob, sender.encrypt(body, self.rng), body))

    @precondition(lambda self: self.in_flight)
    @rule(pick=st.integers(min_value=0))
    def deliver(self, pick: int) -> None:
        message = self.in_flight.pop(pick % len(self.in_flight))
        receiver = self._receiver(message.to_bob)
        if receiver is None:
            accepted = accept_session(
                self.bob_device.local, self.bob_device.secrets(), message.data
            )
            self.bob, body = accepted.session, accepted.body
        else:
            body = receiver.decrypt(message.data)
        assert body == message.body
        self.delivered.append(message)

    @precondition(lambda self: self.in_flight)
    @rule(pick=st.integers(min_value=0))
    def drop(self, pick: int) -> None:
        self.in_flight.pop(pick % len(self.in_flight))

    @precondition(lambda self: self.delivered)
    @rule(pick=st.integers(min_value=0))
    def replay(self, pick: int) -> None:
        message = self.delivered[pick % len(self.delivered)]
        receiver = self._receiver(message.to_bob)
        assert receiver is not None
        before = receiver.to_bytes()
        with pytest.raises(DecryptionError):
            receiver.decrypt(message.data)
        assert receiver.to_bytes() == before

    @precondition(lambda self: self.in_flight)
    @rule(pick=st.integers(min_value=0), bit=st.integers(min_value=0))
    def corrupt(self, pick: int, bit: int) -> None:
        message = self.in_flight[pick % len(self.in_flight)]
        data = bytearray(message.data)
        bit %= len(data) * 8
        data[bit // 8] ^= 1 << (bit % 8)
        receiver = self._receiver(message.to_bob)
        if receiver is None:
            with pytest.raises(VoxError):
                accept_session(self.bob_device.local, self.bob_device.secrets(), bytes(data))
            return
        before = receiver.to_bytes()
        with pytest.raises(VoxError):
            receiver.decrypt(bytes(data))
        assert receiver.to_bytes() == before

    @rule()
    def restart_from_storage(self) -> None:
        self.alice = Session.from_bytes(self.alice.to_bytes())
        if self.bob is not None:
            self.bob = Session.from_bytes(self.bob.to_bytes())

    @invariant()
    def state_round_trips(self) -> None:
        for session in (self.alice, self.bob):
            if session is not None:
                data = session.to_bytes()
                assert Session.from_bytes(data).to_bytes() == data


TwoParties.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
test_two_parties_over_a_lossy_reordering_link = TwoParties.TestCase
