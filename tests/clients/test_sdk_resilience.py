"""Failures through a real relay: restarts and SIGKILL, tampered envelopes, a canary scan.

The send-retry decisions (busy, internal, mismatch, lost answers) are tested without a relay in
``test_engine.py``; the relay being down (the outbox) in ``test_outbox.py``."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from clients.sdk import DecryptFailure, Event, Message, VoxClient
from tests.clients.conftest import Factory
from tests.clients.kit import (
    RelayProcess,
    queued,
    receive_texts,
    receive_until,
    tamper_queued_payload,
    texts,
    wait_for,
    wait_for_value,
)
from tests.server.relay_harness import Relay


def collect(client: VoxClient) -> list[Event]:
    events: list[Event] = []
    client.on_event(events.append)
    return events


def files_under(root: Path) -> list[Path]:
    """Every regular file below ``root``."""
    return [p for p in root.rglob("*") if p.is_file()]


async def test_a_relay_killed_between_send_and_receive_loses_nothing(tmp_path: Path) -> None:
    """SIGKILL (a graceful restart is in ``test_outbox.py``)."""
    relay = RelayProcess(tmp_path / "relay", tmp_path / "relay.log")
    await relay.start()
    try:
        alice = await VoxClient.register(tmp_path / "a", relay.base_url, "alice")
        bob = await VoxClient.register(tmp_path / "b", relay.base_url, "bob")
        await bob.close()
        await alice.connect()
        for i in range(6):
            await alice.send_text("bob", f"m{i}")
        relay.stop(kill=True)
        await relay.start()
        # Alice's client reconnects by itself and keeps sending.
        for i in range(6, 10):
            await alice.send_text("bob", f"m{i}")
        await alice.close()
        bob = await VoxClient.open(tmp_path / "b")
        try:
            events = await receive_texts(bob, "alice", 10)
            assert texts(events, "alice") == [f"m{i}" for i in range(10)]
            again = await bob.receive(wait=0.5)
            assert texts(again, "alice") == []
        finally:
            await bob.close()
    finally:
        relay.stop()


async def test_tampered_envelope_is_reported_acked_and_does_not_jam_the_queue(
    make_client: Factory, relay: Relay, tmp_path: Path
) -> None:
    alice, bob = await make_client("alice"), await make_client("bob")
    await bob.close()
    await alice.send_text("bob", "one")
    await tamper_queued_payload(relay)
    await alice.send_text("bob", "two")
    await alice.send_text("bob", "three")
    bob = await VoxClient.open(tmp_path / "bob")
    try:
        events = await receive_until(
            bob,
            lambda evs: (
                len(texts(evs, "alice")) >= 2 and any(isinstance(e, DecryptFailure) for e in evs)
            ),
        )
        failures = [e for e in events if isinstance(e, DecryptFailure)]
        assert len(failures) == 1 and failures[0].sender == "alice"
        assert texts(events, "alice") == ["two", "three"]
        await wait_for_value(lambda: queued(relay, "bob"), 0)
    finally:
        await bob.close()


async def test_canary_plaintext_never_reaches_relay_storage_or_logs(tmp_path: Path) -> None:
    canary = f"CANARY-{uuid.uuid4().hex}"
    relay = RelayProcess(tmp_path / "relay", tmp_path / "relay.log")
    await relay.start()
    try:
        alice = await VoxClient.register(tmp_path / "a", relay.base_url, "alice")
        bob = await VoxClient.register(tmp_path / "b", relay.base_url, "bob")
        carol = await VoxClient.register(tmp_path / "c", relay.base_url, "carol")
        ev_b = collect(bob)
        for c in (alice, bob, carol):
            await c.connect()
        await alice.send_text("bob", f"direct {canary}")
        group = await alice.create_group(f"group {canary}", ["bob", "carol"])
        await alice.send_group_text(group.group_id, f"group {canary}")
        secret_file = tmp_path / "secret.txt"
        secret_file.write_text((canary + "\n") * 1000)
        await alice.send_file("bob", secret_file, caption=canary)
        await wait_for(lambda: sum(isinstance(e, Message) for e in ev_b) >= 3)
        files = [e for e in ev_b if isinstance(e, Message) and e.attachment]
        got = await bob.download(files[0], tmp_path / "got.txt")
        assert canary in got.read_text()
        for c in (alice, bob, carol):
            await c.close()
    finally:
        relay.stop()
    needle = canary.encode()
    scanned = 0
    for path in [*files_under(tmp_path / "relay"), tmp_path / "relay.log"]:
        assert needle not in path.read_bytes(), f"canary found in {path}"
        scanned += 1
    assert scanned >= 2
    assert (tmp_path / "relay.log").stat().st_size > 0
    assert any(p.stat().st_size > 10_000 for p in files_under(tmp_path / "relay"))


async def test_every_device_acks_and_reads_in_order_after_reconnects(make_client: Factory) -> None:
    alice, bob = await make_client("alice"), await make_client("bob")
    ev_b = collect(bob)
    await bob.connect()
    await alice.connect()
    for i in range(10):
        await alice.send_text("bob", f"x{i}")
        if i == 4:
            await bob.disconnect()
            await asyncio.sleep(0.05)
            await bob.connect()
    await wait_for(lambda: len(texts(ev_b, "alice")) == 10)
    assert texts(ev_b, "alice") == [f"x{i}" for i in range(10)]


async def test_deliveries_waiting_when_the_client_disconnects_are_not_shown_before_the_one_in_hand(
    make_client: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The processor is stopped while it handles x0 (here: fetching alice's device list) and
    x1..x4 wait in the queue. None was acked: after the reconnect the relay sends all five
    again, in order. The queued copies used to be handled first — x1..x4 shown before x0."""
    from clients.sdk import peers

    alice, bob = await make_client("alice"), await make_client("bob")
    events = collect(bob)
    fetching, release = asyncio.Event(), asyncio.Event()
    refresh = peers.refresh_devices

    async def held_first(core: Any, username: str) -> None:
        if core is bob and username == "alice" and not fetching.is_set():
            fetching.set()
            await release.wait()
        await refresh(core, username)

    monkeypatch.setattr(peers, "refresh_devices", held_first)
    await bob.connect()
    await alice.connect()
    for i in range(5):
        await alice.send_text("bob", f"x{i}")
    await asyncio.wait_for(fetching.wait(), 30)  # x0 in hand
    await wait_for(lambda: bob._deliveries.qsize() == 4)  # x1..x4 waiting
    await bob.disconnect()
    release.set()
    await bob.connect()
    await wait_for(lambda: len(texts(events, "alice")) == 5)
    assert texts(events, "alice") == [f"x{i}" for i in range(5)]


async def test_a_retried_send_after_a_dropped_connection_is_not_a_second_message(
    make_client: Factory, relay: Relay, tmp_path: Path
) -> None:
    from clients.sdk.content import TextContent
    from clients.sdk.engine import send_frame
    from clients.store.models import OutboxEntry

    alice, bob = await make_client("alice"), await make_client("bob")
    await bob.close()
    await alice.connect()
    await alice.send_text("bob", "warm-up")  # session set-up
    content = TextContent(text="exactly once", sent_at_ms=1)
    with alice.store.transaction():  # what send_text persists before the first attempt
        alice.protocol.record_outgoing("bob", content)
        alice.store.outbox_put(OutboxEntry(content.id_hex, "bob", content.to_bytes(), 0.0))
        send = alice.protocol.encode_direct("bob", content)
    alice.outbox.forget()  # as a process that wrote it and died would find it:
    alice.outbox.load()  # handed to the engine from the store
    assert alice._socket is not None
    await alice._socket.send(send_frame(send))
    await wait_for_value(lambda: queued(relay, "bob"), 2)  # the relay stored it ...
    old = alice._socket
    old._ws.transport.abort()  # ... but the answer does not count
    # The client reconnects by itself; the engine resends with the same client id.
    await wait_for(lambda: alice._socket is not None and alice._socket is not old)
    await wait_for(lambda: alice.store.outbox_pending() == [])
    assert await queued(relay, "bob") == 2  # nothing stored twice
    bob = await VoxClient.open(tmp_path / "bob")
    try:
        events = await receive_texts(bob, "alice", 2)
        assert texts(events, "alice") == ["warm-up", "exactly once"]
    finally:
        await bob.close()


async def test_a_send_only_connection_leaves_deliveries_for_receiving_later(
    make_client: Factory,
) -> None:
    alice, bob = await make_client("alice"), await make_client("bob")
    await bob.send_text("alice", "warm-up")  # bob connects send-only (like `vox send`)
    await alice.send_text("bob", "for later")
    await asyncio.sleep(0.3)  # delivered to bob's socket, neither processed nor acked
    assert bob.history("alice")[-1].text == "warm-up"
    events = await bob.receive(wait=0.5)  # switching to receiving: the relay delivers again
    assert texts(events, "alice") == ["for later"]
