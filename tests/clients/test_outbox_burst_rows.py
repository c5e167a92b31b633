"""The history rows of a burst of sends (the sends called in one turn of the event loop): a run
of texts is added in one statement, written before any other send of the burst is applied (an
edit in the same burst finds its target), and every message of the burst is stored, sent and
received once, in order (real relay, real SQLite)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from clients.sdk import DeliveryState
from clients.sdk.content import EditContent, TextContent, Transcript
from clients.store import SqliteStore
from crypto.encoding import Writer
from tests.clients.conftest import Factory
from tests.clients.kit import receive_until, texts


async def test_a_burst_with_an_edit_adds_each_run_of_texts_in_one_statement(
    make_client: Factory,
) -> None:
    alice, bob = await make_client("alice"), await make_client("bob")
    await alice.send_text("bob", "set-up")
    store = alice.store
    assert isinstance(store, SqliteStore)
    m = [TextContent(text=f"m{i}", sent_at_ms=1000 + i) for i in range(4)]
    edit = EditContent(target=m[0].message_id, text="m0 edited", sent_at_ms=1010)
    log: list[str] = []
    store._conn.set_trace_callback(log.append)
    results = await asyncio.gather(
        *(alice.outbox.send("bob", c) for c in (m[0], m[1], edit, m[2], m[3]))
    )
    store._conn.set_trace_callback(None)
    inserts = [s for s in log if s.startswith("INSERT OR IGNORE INTO messages")]
    # m0 and m1 in one statement, then the edit is applied to m0, then m2 and m3 together.
    assert len(inserts) == 2
    assert [s.count("), (") for s in inserts] == [1, 1]
    assert inserts[0].index(m[1].message_id.hex()) > inserts[0].index(m[0].message_id.hex())
    assert m[2].message_id.hex() in inserts[1] and m[0].message_id.hex() not in inserts[1]
    assert "COMMIT" not in log[log.index(inserts[0]) : log.index(inserts[1])]
    assert len(results) == 5
    history = {msg.id: msg for msg in alice.history("bob")}
    first = history[m[0].message_id.hex()]
    assert (first.text, first.edited, first.edits) == ("m0 edited", True, ("m0",))
    for content in m:
        assert history[content.message_id.hex()].state is DeliveryState.SENT
    assert alice.outbox.pending() == []

    events = await receive_until(
        bob,
        lambda seen: (
            len(texts(seen, "alice")) == 5 and any(getattr(e, "kind", None) == "edit" for e in seen)
        ),
    )
    assert texts(events, "alice") == ["set-up", "m0", "m1", "m2", "m3"]
    received = {msg.id: msg for msg in bob.history("alice")}
    assert received[m[0].message_id.hex()].text == "m0 edited"
    assert [received[c.message_id.hex()].text for c in m[1:]] == ["m1", "m2", "m3"]


async def test_a_single_device_account_encodes_no_copy_for_its_own_devices(
    make_client: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = await make_client("alice"), await make_client("bob")
    await alice.send_text("bob", "set-up")
    copies: list[Transcript] = []
    payloads: list[int] = []
    encode_direct = alice.protocol.encode_direct
    body = Transcript._body

    def transcript_body(self: Transcript, w: Writer) -> None:
        copies.append(self)
        body(self, w)

    def counting(to: Any, content: Any, **kwargs: Any) -> Any:
        send = encode_direct(to, content, **kwargs)
        payloads.append(len(send.payloads))
        return send

    monkeypatch.setattr(Transcript, "_body", transcript_body)
    monkeypatch.setattr(alice.protocol, "encode_direct", counting)
    await asyncio.gather(*(alice.send_text("bob", f"m{i}") for i in range(3)))
    # Old code encoded a transcript for our other devices, of which there are none.
    assert copies == []
    assert payloads == [1, 1, 1]  # bob's one device
    events = await receive_until(bob, lambda seen: len(texts(seen, "alice")) == 4)
    assert texts(events, "alice") == ["set-up", "m0", "m1", "m2"]
