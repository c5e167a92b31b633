"""The receive path marks a burst's envelope ids seen with one statement (not one per
envelope): duplicates — already stored, or twice in the burst — still yield nothing, a bad
envelope still yields one failure and is not processed again, and the stores agree."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from clients.sdk import Message, VoxClient, inbox
from clients.sdk.core import Core
from clients.sdk.engine import Process
from clients.sdk.models import DecryptFailure
from clients.sdk.protocol import Envelope, NeedDeviceList
from clients.store import MemoryStore, SqliteStore
from tests.clients.conftest import Factory
from tests.clients.fake_relay import Device, FakeRelay
from tests.clients.kit import queued, texts, wait_for, wait_for_value
from tests.server.relay_harness import Relay

BURST = 25


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore.open(tmp_path / "p")
    yield store
    store.close()


def test_marking_a_burst_seen_answers_which_ids_were_new(sqlite_store: SqliteStore) -> None:
    memory = MemoryStore()
    ids = [f"env:{i}" for i in range(1200)]  # more than one statement's parameters
    for store in (sqlite_store, memory):
        assert store.mark_seen("env:7", 1.0)
        assert store.mark_seen_many([*ids, "env:3"], 2.0) == set(ids) - {"env:7"}
        assert store.mark_seen_many(["env:5", "x", "x"], 3.0) == {"x"}
        assert store.is_seen("env:1199") and store.is_seen("x")
        assert store.mark_seen_many([], 4.0) == set()


def test_a_burst_of_ids_is_one_statement_in_the_sqlite_store(sqlite_store: SqliteStore) -> None:
    log: list[str] = []
    sqlite_store._conn.set_trace_callback(log.append)
    assert sqlite_store.mark_seen_many([f"env:{i}" for i in range(BURST)], 1.0) == {
        f"env:{i}" for i in range(BURST)
    }
    assert sum(s.startswith("INSERT OR IGNORE INTO seen") for s in log) == 1


def envelopes_for(device: Device) -> list[Envelope]:
    out = []
    for frame in device.relay.queues[device.address]:
        envelope = device.engine.envelope(frame)
        assert isinstance(envelope, Envelope)
        out.append(envelope)
    return out


def test_a_burst_with_duplicates_and_a_bad_envelope_is_received_like_one_by_one() -> None:
    results = []
    for burst in (True, False):
        relay = FakeRelay()
        alice, bob = Device.register(relay, "alice"), Device.register(relay, "bob")
        for i in range(4):
            assert alice.send_text("bob", f"m{i}")
        first, second, third, fourth = envelopes_for(bob)
        bad = dataclasses.replace(third, envelope_id="ff" * 16, data=third.data[:-1] + b"\x00")
        # Bad before its good copy: a failure must not advance the session.
        incoming = [first, second, bad, second, third, first, fourth]
        for envelope in incoming:
            need = bob.proto.precheck(envelope)
            if isinstance(need, NeedDeviceList):
                bob.refresh(need.username)
        if burst:
            received = bob.proto.receive_all(incoming)
            again = bob.proto.receive_all(incoming)
        else:
            received = [bob.proto.receive(e) for e in incoming]
            again = [bob.proto.receive(e) for e in incoming]
        events = [e for r in received for e in r.events]
        shown = [e.text for e in events if isinstance(e, Message)]
        assert shown == ["m0", "m1", "m2", "m3"]  # each once, duplicates yield nothing
        assert [type(e) for e in events].count(DecryptFailure) == 1
        assert all(not r.events for r in again)  # everything was marked seen
        receipts = [a for r in received for a in r.actions]
        results.append((shown, [type(e).__name__ for e in events], len(receipts)))
    assert results[0] == results[1]


def hold_until(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    """Start the delivery processor only once ``count`` deliveries wait (one burst)."""
    real_run = inbox.run

    async def held(
        core: Core, deliveries: asyncio.Queue[Process], ack: Callable[[list[int]], Awaitable[None]]
    ) -> None:
        await wait_for(lambda: deliveries.qsize() >= count)
        await real_run(core, deliveries, ack)

    monkeypatch.setattr(inbox, "run", held)


async def test_a_delivery_burst_marks_its_ids_seen_in_one_statement(
    make_client: Factory, relay: Relay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = await make_client("alice"), await make_client("bob")
    await bob.close()
    for i in range(BURST):
        await alice.send_text("bob", f"s{i}")
    bob = await VoxClient.open(tmp_path / "bob")
    try:
        store = bob.store
        assert isinstance(store, SqliteStore)
        log: list[str] = []
        store._conn.set_trace_callback(log.append)
        hold_until(monkeypatch, BURST)
        events = await bob.receive(wait=1.0)
        assert texts(events, "alice") == [f"s{i}" for i in range(BURST)]
        await wait_for_value(lambda: queued(relay, "bob"), 0)
        store._conn.set_trace_callback(None)
        assert sum(s.startswith("INSERT OR IGNORE INTO seen") for s in log) == 1
    finally:
        await bob.close()
