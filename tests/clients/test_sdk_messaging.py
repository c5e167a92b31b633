"""Two SDK clients chat through a real relay on loopback: order, exactly-once, receipts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from clients.sdk import DeliveryState, Event, ReceiptEvent, VoxClient
from tests.clients.conftest import Factory
from tests.clients.kit import queued, texts, wait_for, wait_for_value
from tests.server.relay_harness import Relay


@pytest.fixture
def relay(relay_on_both: Relay) -> Relay:
    """Every test of this module runs on SQLite and on PostgreSQL."""
    return relay_on_both


async def test_hundred_messages_each_way_arrive_once_in_order(make_client: Factory) -> None:
    alice, bob = await make_client("alice"), await make_client("bob")
    got_a: list[Event] = []
    got_b: list[Event] = []
    alice.on_event(got_a.append)
    bob.on_event(got_b.append)
    await alice.connect()
    await bob.connect()

    async def chat(me: VoxClient, peer: str, prefix: str) -> None:
        for i in range(100):
            await me.send_text(peer, f"{prefix} {i}")

    await asyncio.gather(chat(alice, "bob", "a"), chat(bob, "alice", "b"))
    await wait_for(lambda: len(texts(got_b, "alice")) >= 100 and len(texts(got_a, "bob")) >= 100)
    await asyncio.sleep(0.3)  # nothing more (no duplicates) may arrive
    assert texts(got_b, "alice") == [f"a {i}" for i in range(100)]
    assert texts(got_a, "bob") == [f"b {i}" for i in range(100)]
    history = alice.history("bob", limit=500)
    assert len(history) == 200
    assert all(m.text for m in history)


async def test_delivery_and_read_receipts_update_the_senders_history(make_client: Factory) -> None:
    alice, bob = await make_client("alice"), await make_client("bob")
    receipts: list[Event] = []
    alice.on_event(receipts.append)
    await alice.connect()
    await bob.connect()
    sent = await alice.send_text("bob", "read me")
    await wait_for(lambda: any(isinstance(e, ReceiptEvent) for e in receipts))
    assert alice.history("bob")[-1].state is DeliveryState.DELIVERED
    await wait_for(lambda: len(bob.history("alice")) == 1)
    assert await bob.mark_read("alice") == 1
    await wait_for(lambda: alice.history("bob")[-1].state is DeliveryState.READ)
    kinds = [e.kind for e in receipts if isinstance(e, ReceiptEvent)]
    assert kinds == [DeliveryState.DELIVERED, DeliveryState.READ]
    assert all(sent.id in e.message_ids for e in receipts if isinstance(e, ReceiptEvent))


async def test_offline_recipient_gets_fifty_messages_and_the_queue_empties(
    make_client: Factory, relay: Relay, tmp_path: Path
) -> None:
    alice, bob = await make_client("alice"), await make_client("bob")
    await bob.close()  # bob is offline (registered, never connected)
    for i in range(50):
        await alice.send_text("bob", f"offline {i}")
    bob = await VoxClient.open(tmp_path / "bob")
    try:
        assert await queued(relay, "bob") == 50
        events = await bob.receive(wait=1.0)
        assert texts(events, "alice") == [f"offline {i}" for i in range(50)]
        await wait_for_value(lambda: queued(relay, "bob"), 0)
    finally:
        await bob.close()
