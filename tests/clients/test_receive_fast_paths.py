"""The receive path's shortcuts give what the general code gives: a burst's session written
once, its chat messages stored together (one ``INSERT`` for a run of them; duplicates, order
and operations as when stored one by one), relay payloads parsed without building them (same
errors), history rows turned into :class:`Message` s field by field."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.sdk import sessions
from clients.sdk.content import Content, EditContent, ReceiptKind, RelayPayload, TextContent
from clients.sdk.models import AttachmentInfo, DecryptFailure, Message, MessageUpdate, ReplyRef
from clients.sdk.protocol import Envelope, SendReceipt, message_from_stored
from clients.store.models import DeliveryState, Direction, StoredMessage
from clients.store.sqlite import SqliteStore
from crypto.errors import VoxError
from crypto.ratchet.session import Session
from tests.clients.test_protocol_pair import Party, envelopes, messages, pair


@pytest.fixture
def parties(tmp_path: Path) -> Iterator[tuple[Party, Party]]:
    """alice and bob on SQLite stores, bob holding alice's first message."""
    stores = (SqliteStore.open(tmp_path / "alice"), SqliteStore.open(tmp_path / "bob"))
    alice, bob = pair(stores)
    bob.knows(alice)
    assert messages(bob, envelopes(alice, "bob", "set-up")) == ["set-up"]
    yield alice, bob
    for store in stores:
        store.close()


def test_a_burst_encodes_and_writes_each_session_once(
    parties: tuple[Party, Party], monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = parties
    assert messages(alice, envelopes(bob, "alice", "reply")) == ["reply"]
    burst = envelopes(alice, "bob", *(f"m{i}" for i in range(5)))
    encoded: list[int] = []
    real = sessions._encode

    def counted(states: list[Session]) -> bytes:
        encoded.append(len(states))
        return real(states)

    monkeypatch.setattr(sessions, "_encode", counted)
    with bob.proto.store.transaction(sync=False):
        received = bob.proto.receive_all(burst)
    assert [e.text for r in received for e in r.events if isinstance(e, Message)] == [
        f"m{i}" for i in range(5)
    ]
    assert len(encoded) == 1  # not once per message
    # What was written is what the book goes on with: the next message decrypts, a replay not.
    assert messages(bob, envelopes(alice, "bob", "next")) == ["next"]
    (failure,) = bob.proto.receive_all([Envelope(99, "again", "alice", 1, 0, burst[0].data)])[
        0
    ].events
    assert isinstance(failure, DecryptFailure) and failure.error == "DuplicateMessage"


def test_a_burst_that_raises_writes_no_session(parties: tuple[Party, Party]) -> None:
    alice, bob = parties
    burst = envelopes(alice, "bob", "one", "two")
    before = bob.proto.store.load_session("alice", 1)
    deferred = bob.proto.sessions.deferred()
    with pytest.raises(RuntimeError), bob.proto.store.transaction(sync=False), deferred:
        assert len(bob.proto.receive_all(burst)) == 2
        raise RuntimeError("the burst's commit failed")
    assert bob.proto.store.load_session("alice", 1) == before
    assert messages(bob, burst) == ["one", "two"]


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x02\x01abc", b"\x01\x09abc", b"\x01\x00"])
def test_a_malformed_relay_payload_fails_as_its_decoding_does(data: bytes) -> None:
    alice, bob = pair()
    bob.knows(alice)
    with pytest.raises(VoxError) as expected:
        RelayPayload.from_bytes(data)
    assert bob.proto.precheck(Envelope(1, "bad", "alice", 1, 0, data)) is None
    (failure,) = bob.proto.receive(Envelope(1, "bad", "alice", 1, 0, data)).events
    assert isinstance(failure, DecryptFailure)
    assert failure.error == type(expected.value).__name__


def test_message_from_stored_sets_every_field() -> None:
    stored = StoredMessage(
        message_id="ab" * 16,
        conversation="group:" + "cd" * 16,
        direction=Direction.OUT,
        sender="alice",
        sender_device=2,
        sent_at=1.5,
        received_at=2.25,
        text="now",
        attachment={
            "pointer": "0011",
            "file_name": "f.txt",
            "content_type": "text/plain",
            "size": 3,
            "digest": "ee",
            "path": "/tmp/f.txt",
        },
        state=DeliveryState.READ,
        edits=("before",),
        deleted=False,
        reply=("ef" * 16, "bob", "quoted"),
        reactions=(("bob", "+1"),),
        expires_in=60,
        expire_at=99.0,
        timer=None,
    )
    assert message_from_stored(stored) == Message(
        id="ab" * 16,
        conversation="group:" + "cd" * 16,
        sender="alice",
        device=2,
        sent_at=1500,
        received_at=2250,
        text="now",
        attachment=AttachmentInfo(
            "f.txt", "text/plain", 3, "ee", bytes.fromhex("0011"), Path("/tmp/f.txt")
        ),
        group_id="cd" * 16,
        outgoing=True,
        state=DeliveryState.READ,
        edited=True,
        deleted=False,
        reply_to=ReplyRef("ef" * 16, "bob", "quoted"),
        reactions=(("bob", "+1"),),
        expires_in=60,
        edits=("before",),
        timer=None,
    )
    timer = StoredMessage("12" * 16, "bob", Direction.IN, "bob", 1, 1.0, 2.0, timer=30)
    message = message_from_stored(timer)
    assert (message.timer, message.group_id, message.outgoing, message.kind) == (
        30, None, False, "timer"
    )  # fmt: skip


_envelope_ids = itertools.count(1000)


def inserts(log: list[str]) -> list[str]:
    return [s for s in log if s.startswith("INSERT OR IGNORE INTO messages")]


def traced(store: SqliteStore) -> list[str]:
    log: list[str] = []
    store._conn.set_trace_callback(log.append)
    return log


def sent(sender: Party, to: str, *contents: Content) -> list[Envelope]:
    """Envelopes of ``contents`` (the same content twice: two envelopes, one message id)."""
    out = []
    for content in contents:
        ((data, _),) = sender.proto.encode_direct(to, content).payloads
        out.append(Envelope(next(_envelope_ids), f"e{next(_envelope_ids)}", "alice", 1, 0, data))
    return out


def test_a_burst_stores_its_messages_in_one_statement_ignoring_duplicates(
    parties: tuple[Party, Party],
) -> None:
    alice, bob = parties
    earlier = TextContent(text="earlier", sent_at_ms=5)
    assert [e.text for r in bob.proto.receive_all(sent(alice, "bob", earlier)) for e in r.events
            if isinstance(e, Message)] == ["earlier"]  # fmt: skip
    store = bob.proto.store
    assert isinstance(store, SqliteStore)
    m0, m1, m2 = (TextContent(text=f"text{i}", sent_at_ms=10 + i) for i in range(3))
    # m1 twice in the burst (a resend under another envelope), earlier again, m2 last.
    burst = sent(alice, "bob", m0, m1, m1, earlier, m2)
    log = traced(store)
    with store.transaction(sync=False):
        received = bob.proto.receive_all(burst)
    assert len(inserts(log)) == 1  # old: one INSERT per message
    assert len([s for s in log if s.startswith("INSERT INTO search_pending")]) == 1
    texts = [[e.text for e in r.events if isinstance(e, Message)] for r in received]
    assert texts == [["text0"], ["text1"], [], [], ["text2"]]
    ids = [[i for a in r.actions for i in a.ids] for r in received]
    assert ids == [[m0.message_id], [m1.message_id], [], [], [m2.message_id]]
    assert all(
        a == SendReceipt("alice", ReceiptKind.DELIVERED, a.ids) for r in received for a in r.actions
    )
    history = [m.text for m in store.history("alice")]
    assert history == ["set-up", "earlier", "text0", "text1", "text2"]
    assert [m.text for m in store.search_messages("text1")] == ["text1"]


def test_an_operation_in_a_burst_sees_the_messages_before_it(
    parties: tuple[Party, Party],
) -> None:
    alice, bob = parties
    first, second = (
        TextContent(text="first", sent_at_ms=1),
        TextContent(text="second", sent_at_ms=2),
    )
    last = TextContent(text="last", sent_at_ms=3)
    edit = EditContent(target=first.message_id, text="first edited", sent_at_ms=3)
    early = EditContent(target=last.message_id, text="last edited", sent_at_ms=4)
    store = bob.proto.store
    assert isinstance(store, SqliteStore)
    log = traced(store)
    # The edit of ``first`` comes after it; the edit of ``last`` before it (kept, applied when
    # ``last`` is stored).
    with store.transaction(sync=False):
        received = bob.proto.receive_all(sent(alice, "bob", first, second, edit, early, last))
    events = [
        (type(e).__name__, e.text) for r in received for e in r.events
        if isinstance(e, Message | MessageUpdate)
    ]  # fmt: skip
    assert events == [
        ("Message", "first"),
        ("Message", "second"),
        ("MessageUpdate", "first edited"),
        ("Message", "last"),
        ("MessageUpdate", "last edited"),
    ]
    assert [m.text for m in store.history("alice")] == [
        "set-up",
        "first edited",
        "second",
        "last edited",
    ]
    # first and second before the edit (old: one INSERT each), last at the burst's end.
    assert len(inserts(log)) == 2
