"""The decoded-session cache of :class:`clients.sdk.sessions.SessionBook` always agrees with
the store: after a tampered message, a message refused once decrypted, and a transaction that
rolled back (on SQLite and in memory)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.sdk.content import (
    PayloadKind,
    Receipt,
    ReceiptKind,
    RelayPayload,
    TextContent,
    VerifiedContent,
)
from clients.sdk.models import DecryptFailure, ReceiptEvent
from clients.sdk.protocol import Envelope
from clients.sdk.sessions import _decode
from clients.store.base import Store
from clients.store.memory import MemoryStore
from clients.store.models import DeliveryState
from clients.store.sqlite import SqliteStore
from crypto.envelope import decode_message
from crypto.errors import VoxError
from tests.clients.test_protocol_pair import Party, envelopes, messages, pair


@pytest.fixture(params=["sqlite", "memory"])
def parties(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Party, Party]]:
    stores: tuple[Store, Store]
    if request.param == "sqlite":
        stores = (SqliteStore.open(tmp_path / "alice"), SqliteStore.open(tmp_path / "bob"))
    else:
        stores = (MemoryStore(), MemoryStore())
    alice, bob = pair(stores)
    bob.knows(alice)
    yield alice, bob
    for store in stores:
        store.close()


def set_up(alice: Party, bob: Party, *, replied: bool) -> None:
    """alice's first message; with ``replied`` bob answers, so alice's next messages are
    ratchet messages (else initial messages, with the PQXDH prefix, until bob replies)."""
    assert messages(bob, envelopes(alice, "bob", "set-up")) == ["set-up"]
    if replied:
        assert messages(alice, envelopes(bob, "alice", "reply")) == ["reply"]


def assert_cache_is_store(party: Party, peer: str) -> None:
    """What the book would encrypt/decrypt with is exactly the store's state."""
    stored = party.proto.store.load_session(peer, 1)
    assert stored is not None
    in_use = party.proto.sessions._load(peer, 1)
    assert [s.to_bytes() for s in in_use] == [s.to_bytes() for s in _decode(stored)]


def tampered(envelope: Envelope, position: int) -> Envelope:
    data = bytearray(envelope.data)
    data[position] ^= 0x01
    return Envelope(envelope.seq, envelope.envelope_id + "t", "alice", 1, 0, bytes(data))


@pytest.mark.parametrize("replied", [False, True])
def test_a_tampered_message_then_a_good_one(parties: tuple[Party, Party], replied: bool) -> None:
    alice, bob = parties
    set_up(alice, bob, replied=replied)
    first, second = envelopes(alice, "bob", "one", "two")
    (failure,) = messages(bob, [tampered(first, len(first.data) - 1)])
    assert isinstance(failure, DecryptFailure)
    assert_cache_is_store(bob, "alice")
    assert messages(bob, [first, second]) == ["one", "two"]
    assert_cache_is_store(bob, "alice")


@pytest.mark.parametrize("replied", [False, True])
def test_a_message_refused_after_decrypting_leaves_the_stored_state(
    parties: tuple[Party, Party], replied: bool
) -> None:
    # A verification sync only comes from our own devices: bob decrypts it, then refuses it
    # (no commit). Its message key must stay unused, as in the store: the same ciphertext
    # again is refused for what it says, not as a replay of an already used key.
    alice, bob = parties
    set_up(alice, bob, replied=replied)
    send = alice.proto.encode_direct(
        "bob", VerifiedContent(username="carol", account_key=alice.account_key)
    )
    ((data, _),) = send.payloads
    refused = [Envelope(90, "v1", "alice", 1, 0, data), Envelope(91, "v2", "alice", 1, 0, data)]
    (failure,) = messages(bob, refused[:1])
    assert isinstance(failure, DecryptFailure) and failure.error == "GroupError"
    assert_cache_is_store(bob, "alice")
    assert messages(bob, envelopes(alice, "bob", "after")) == ["after"]
    (again,) = messages(bob, refused[1:])
    assert isinstance(again, DecryptFailure) and again.error == "GroupError"


@pytest.mark.parametrize("replied", [False, True])
def test_a_rolled_back_burst_leaves_the_stored_state(
    parties: tuple[Party, Party], replied: bool
) -> None:
    # A burst decrypted and committed its sessions inside one store transaction, then the
    # transaction failed (a store error, a crash): nothing of it happened, so the same
    # envelopes, delivered again, decrypt.
    alice, bob = parties
    set_up(alice, bob, replied=replied)
    burst = envelopes(alice, "bob", "one", "two")
    with pytest.raises(RuntimeError), bob.proto.store.transaction(sync=False):
        assert messages(bob, burst) == ["one", "two"]
        raise RuntimeError("the burst's commit failed")
    assert_cache_is_store(bob, "alice")
    assert messages(bob, burst) == ["one", "two"]
    assert_cache_is_store(bob, "alice")


def test_a_rolled_back_encryption_leaves_the_stored_state(parties: tuple[Party, Party]) -> None:
    alice, bob = parties
    set_up(alice, bob, replied=True)
    with pytest.raises(RuntimeError), alice.proto.store.transaction():
        alice.proto.encode_direct("bob", TextContent(text="never sent", sent_at_ms=1))
        raise RuntimeError("the send was not recorded")
    assert_cache_is_store(alice, "bob")
    assert messages(bob, envelopes(alice, "bob", "sent")) == ["sent"]
    assert_cache_is_store(alice, "bob")


def test_a_burst_writes_its_session_once_and_reads_no_seen_mark(tmp_path: Path) -> None:
    # Store statements per received message: the "seen" insert says whether the envelope is
    # new (no SELECT before it), and the session advanced by the whole burst is written once.
    stores = (SqliteStore.open(tmp_path / "alice"), SqliteStore.open(tmp_path / "bob"))
    alice, bob = pair(stores)
    bob.knows(alice)
    set_up(alice, bob, replied=True)
    burst = envelopes(alice, "bob", *(f"m{i}" for i in range(5)))
    statements: list[str] = []
    stores[1]._conn.set_trace_callback(statements.append)
    with stores[1].transaction(sync=False):
        assert messages(bob, burst) == [f"m{i}" for i in range(5)]
    assert not [s for s in statements if s.startswith("SELECT 1 FROM seen")]
    assert len([s for s in statements if s.startswith("INSERT") and "INTO sessions" in s]) == 1
    assert len([s for s in statements if s.startswith("INSERT OR IGNORE INTO seen")]) == 5
    assert messages(bob, burst[:1]) == []  # a duplicate is still recognised
    for store in stores:
        store.close()


def test_a_receipt_moves_its_messages_in_one_statement(tmp_path: Path) -> None:
    stores = (SqliteStore.open(tmp_path / "alice"), SqliteStore.open(tmp_path / "bob"))
    alice, bob = pair(stores)
    bob.knows(alice)
    texts = [TextContent(text=f"m{i}", sent_at_ms=1) for i in range(4)]
    for content in texts:
        alice.proto.record_outgoing("bob", content)
        alice.proto.mark_sent([content.message_id.hex()])
    set_up(alice, bob, replied=True)
    receipt = Receipt(
        kind=ReceiptKind.DELIVERED, ids=tuple(c.message_id for c in texts), sent_at_ms=1
    )
    send = bob.proto.encode_direct("alice", receipt)
    ((data, _),) = send.payloads
    updates: list[str] = []
    stores[0]._conn.set_trace_callback(
        lambda sql: updates.append(sql) if sql.startswith("UPDATE messages") else None
    )
    (event,) = alice.proto.receive(Envelope(70, "rc", "bob", 1, 0, data)).events
    assert isinstance(event, ReceiptEvent) and len(event.message_ids) == 4
    assert len(updates) == 1
    states = {m.message_id: m.state for m in stores[0].history("bob")}
    assert {states[c.message_id.hex()] for c in texts} == {DeliveryState.DELIVERED}
    for store in stores:
        store.close()


@pytest.mark.parametrize("garbage", [b"", b"\x02", b"\x09\x01" + b"\x00" * 80, b"\x02\x01\x05"])
def test_a_malformed_ratchet_message_fails_as_its_decoding_does(
    parties: tuple[Party, Party], garbage: bytes
) -> None:
    # Ratchet messages are parsed by the session (not decoded first): the failure is still
    # the decoder's own error.
    alice, bob = parties
    set_up(alice, bob, replied=True)
    with pytest.raises(VoxError) as expected:
        decode_message(garbage)
    data = RelayPayload(PayloadKind.PAIRWISE, garbage).to_bytes()
    (failure,) = messages(bob, [Envelope(80, "g", "alice", 1, 0, data)])
    assert isinstance(failure, DecryptFailure)
    assert failure.error == type(expected.value).__name__
    assert_cache_is_store(bob, "alice")
    assert messages(bob, envelopes(alice, "bob", "still fine")) == ["still fine"]
