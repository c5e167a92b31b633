"""Frames on the client's send path: written as JSON text without the pydantic models (the same
text ``wire.frames.encode`` gives, and a frame the relay's strict parser reads), and the frames
of one build batch go to the socket in one write (real relay, real SQLite)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from clients.sdk.engine import ack_frames, ack_texts, send_frame, send_text
from clients.sdk.protocol import OutgoingSend
from clients.store import SqliteStore
from tests.clients.conftest import Factory
from tests.clients.kit import receive_texts, texts
from wire.frames import AckFrame, SendFrame, encode, parse_client_frame

BURST = 6

SENDS = [
    OutgoingSend("a1" * 16, [(b"\x00\x01ciphertext", [("bob", 1)])]),
    OutgoingSend("b2" * 16, [(b"x" * 300, [("bob", 1), ("bob", 7)]), (b"y", [("alice", 2)])]),
    OutgoingSend("c3" * 16, [(b"z" * 40, [("carol_9", 4294967295)])], ttl=86400),
    OutgoingSend("d4" * 16, [(b"t", [("bob", 1)])], ephemeral=True),
]


@pytest.mark.parametrize("send", SENDS, ids=["plain", "several", "ttl", "ephemeral"])
@pytest.mark.parametrize("after", [None, "ef" * 16])
def test_a_send_text_is_the_encoded_send_frame(send: OutgoingSend, after: str | None) -> None:
    text = send_text(send, after)
    assert text == encode(send_frame(send, after))
    frame = parse_client_frame(text)
    assert isinstance(frame, SendFrame)
    assert frame == send_frame(send, after)


@pytest.mark.parametrize("count", [1, 999, 1000, 1001, 2500])
def test_ack_texts_are_the_encoded_ack_frames(count: int) -> None:
    seqs = list(range(1, count + 1))
    texts_ = ack_texts(seqs)
    assert texts_ == [encode(f) for f in ack_frames(seqs)]
    frames = [parse_client_frame(t) for t in texts_]
    assert all(isinstance(f, AckFrame) for f in frames)
    assert [s for f in frames if isinstance(f, AckFrame) for s in f.seqs] == seqs


async def test_the_frames_of_a_build_batch_go_out_in_one_socket_write(
    make_client: Factory,
) -> None:
    alice, bob = await make_client("alice"), await make_client("bob")
    await alice.send_text("bob", "set-up")  # bob is not connected: no receipts come back
    socket = alice._socket
    assert socket is not None
    transport: Any = socket._ws.transport
    writes: list[int] = []
    write = transport.write

    def counting(data: bytes) -> None:
        writes.append(len(data))
        write(data)

    transport.write = counting
    store = alice.store
    assert isinstance(store, SqliteStore)
    log: list[str] = []
    store._conn.set_trace_callback(log.append)
    try:
        await asyncio.gather(*(alice.send_text("bob", f"m{i}") for i in range(BURST)))
    finally:
        store._conn.set_trace_callback(None)
        del transport.write
    # One build per batch, each writing the session's advanced state once at its commit.
    builds = sum(s.startswith("INSERT") and "INTO sessions" in s for s in log)
    assert 1 <= builds < BURST  # the sends were built in batches
    assert len(writes) == builds  # one write per batch, not one per frame
    received = await receive_texts(bob, "alice", BURST + 1)
    assert texts(received, "alice") == ["set-up", *(f"m{i}" for i in range(BURST))]
