"""Store commits on the send path: concurrent sends write their history and outbox rows in one
transaction (one commit for the burst, not one each), in call order, and are built (encrypted)
in that same transaction when they may go at once; a send whose rows cannot be written, or
whose build fails, fails alone (real relay, real SQLite)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from clients.sdk import DeliveryState
from clients.sdk.content import TextContent
from clients.store import SqliteStore
from tests.clients.conftest import Factory
from tests.clients.kit import receive_texts, texts

BURST = 5


async def test_concurrent_sends_are_written_and_built_in_one_commit(make_client: Factory) -> None:
    alice, bob = await make_client("alice"), await make_client("bob")
    await alice.send_text("bob", "set-up")
    store = alice.store
    assert isinstance(store, SqliteStore)
    log: list[str] = []
    store._conn.set_trace_callback(log.append)
    results = await asyncio.gather(*(alice.send_text("bob", f"m{i}") for i in range(BURST)))
    store._conn.set_trace_callback(None)
    rows = [i for i, s in enumerate(log) if s.startswith("INSERT OR IGNORE INTO messages")]
    puts = [i for i, s in enumerate(log) if s.startswith("INSERT OR REPLACE INTO outbox")]
    assert len(rows) == 1  # the burst's history rows in one statement
    assert log[rows[0]].count("), (") == BURST - 1
    assert len(puts) == 1  # the burst's outbox entries in one statement
    assert log[puts[0]].count("), (") == BURST - 1
    assert "COMMIT" not in log[rows[0] : puts[0]]  # every send's rows in one transaction
    # ... and their builds: old code committed the rows, then a build transaction wrote the
    # advanced ratchet and counted the attempts (UPDATE outbox SET attempts) and committed.
    commit = log.index("COMMIT", rows[0])
    assert any(s.startswith("INSERT") and "INTO sessions" in s for s in log[rows[0] : commit])
    assert log[puts[0]].count(", 1, x'") == BURST  # inserted as attempted once
    assert not any(s.startswith("UPDATE outbox SET attempts") for s in log)
    assert alice.outbox.pending() == []
    states = {m.id: m.state for m in alice.history("bob")}
    assert {states[r.id] for r in results} == {DeliveryState.SENT}
    received = await receive_texts(bob, "alice", BURST + 1)
    assert texts(received, "alice") == ["set-up", *(f"m{i}" for i in range(BURST))]


async def test_a_burst_whose_build_fails_is_written_and_the_bad_send_fails_alone(
    make_client: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = await make_client("alice"), await make_client("bob")
    await alice.send_text("bob", "set-up")
    encode = alice.protocol.encode_direct
    bad = TextContent(text="bad", sent_at_ms=1)

    def failing(to: Any, content: Any, **kwargs: Any) -> Any:
        if content.message_id == bad.message_id:
            raise ValueError("cannot encrypt this one")
        return encode(to, content, **kwargs)

    monkeypatch.setattr(alice.protocol, "encode_direct", failing)
    contents = [TextContent(text="m0", sent_at_ms=1), bad, TextContent(text="m2", sent_at_ms=1)]
    outcomes = await asyncio.gather(
        *(alice.outbox.send("bob", c) for c in contents), return_exceptions=True
    )
    monkeypatch.undo()
    assert isinstance(outcomes[1], ValueError)
    assert not isinstance(outcomes[0], BaseException)
    assert not isinstance(outcomes[2], BaseException)
    assert alice.store.get_message(bad.message_id.hex()) is None  # it never left: no trace
    assert alice.outbox.pending() == []
    received = await receive_texts(bob, "alice", 3)
    assert texts(received, "alice") == ["set-up", "m0", "m2"]


async def test_a_send_whose_rows_fail_fails_alone(make_client: Factory) -> None:
    alice, bob = await make_client("alice"), await make_client("bob")
    await alice.send_text("bob", "set-up")

    def broken() -> None:
        raise OSError("disk full")

    contents = [TextContent(text=f"m{i}", sent_at_ms=1) for i in range(3)]
    outcomes = await asyncio.gather(
        alice.outbox.send("bob", contents[0]),
        alice.outbox.send("bob", contents[1], local=broken),
        alice.outbox.send("bob", contents[2]),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], OSError)
    assert not isinstance(outcomes[0], BaseException)
    assert not isinstance(outcomes[2], BaseException)
    assert alice.store.get_message(contents[1].message_id.hex()) is None  # no trace
    assert alice.outbox.pending() == []
    received = await receive_texts(bob, "alice", 3)
    assert texts(received, "alice") == ["set-up", "m0", "m2"]


async def test_sent_updates_waiting_for_their_timer_go_in_the_next_sends_commit(
    make_client: Factory,
) -> None:
    alice, bob = await make_client("alice"), await make_client("bob")
    await alice.send_text("bob", "set-up")
    store = alice.store
    assert isinstance(store, SqliteStore)
    earlier = "0" * 32  # an accepted send whose ``sent`` waits for the outbox's timer
    alice.outbox._mark_sent(earlier)
    log: list[str] = []
    store._conn.set_trace_callback(log.append)
    await alice.send_text("bob", "next")
    store._conn.set_trace_callback(None)
    assert earlier not in alice.outbox._sent_batch  # written, in the next send's commit
    update = next(i for i, s in enumerate(log) if s.startswith("UPDATE messages") and earlier in s)
    insert = next(i for i, s in enumerate(log) if s.startswith("INSERT OR IGNORE INTO messages"))
    assert update < insert
    assert "COMMIT" not in log[update:insert]  # one transaction, one commit
    received = await receive_texts(bob, "alice", 2)
    assert texts(received, "alice") == ["set-up", "next"]


async def test_a_burst_whose_commit_fails_after_its_builds_is_built_again_and_sent(
    make_client: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = await make_client("alice"), await make_client("bob")
    await alice.send_text("bob", "set-up")
    store = alice.store
    assert isinstance(store, SqliteStore)
    write_pending = store._write_pending
    failed: list[int] = []

    def failing_once() -> None:
        if not failed and store._dirty_sessions:  # the burst's commit, its builds done
            failed.append(1)
            raise OSError("disk full")
        write_pending()

    monkeypatch.setattr(store, "_write_pending", failing_once)
    results = await asyncio.gather(*(alice.send_text("bob", f"m{i}") for i in range(BURST)))
    monkeypatch.undo()
    assert failed  # the rolled-back builds were queued again, built and sent
    assert len({r.id for r in results}) == BURST
    await alice.send_text("bob", "after")  # the ratchet on disk is the one the frames used
    assert alice.outbox.pending() == []
    received = await receive_texts(bob, "alice", BURST + 2)
    assert texts(received, "alice") == ["set-up", *(f"m{i}" for i in range(BURST)), "after"]
