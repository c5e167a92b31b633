"""Edit, delete, replies, reactions and disappearing messages between real clients through a
real relay: one-to-one with a linked second device (transcripts), and in a group."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from clients.sdk import (
    ClientError,
    Event,
    Message,
    MessageUpdate,
    VoxClient,
    message_ops,
    message_rules,
)
from clients.sdk.content import TextContent
from clients.sdk.engine import send_frame
from clients.sdk.protocol import message_from_stored
from server.db.models_delivery import DeliverySend
from tests.clients.conftest import Factory
from tests.clients.kit import wait_for
from tests.server.relay_harness import Relay


def collect(client: VoxClient) -> list[Event]:
    events: list[Event] = []
    client.on_event(events.append)
    return events


def kinds(events: list[Event]) -> list[str]:
    return [e.kind for e in events if isinstance(e, MessageUpdate)]


def row(client: VoxClient, message_id: str) -> Message | None:
    stored = client.store.get_message(message_id)
    return None if stored is None else message_from_stored(stored)


async def until(client: VoxClient, message_id: str, check: Callable[[Message], bool]) -> Message:
    """Wait until ``client`` holds the message and ``check`` holds for it; return it."""
    await wait_for(lambda: (m := row(client, message_id)) is not None and check(m))
    found = row(client, message_id)
    assert found is not None
    return found


async def test_operations_reach_the_peer_and_a_linked_device(
    make_client: Factory, relay: Relay, tmp_path: Path
) -> None:
    alice, bob = await make_client("alice"), await make_client("bob")
    ev_b = collect(bob)
    for c in (alice, bob):
        await c.connect()
    invitation = await alice.link()
    alice2 = await VoxClient.join(tmp_path / "alice2", relay.base_url, invitation.code)
    try:
        ev_a2 = collect(alice2)
        await alice2.connect()
        assert await alice.wait_linked(invitation, within=20) == invitation.device_id
        sent = await alice.send_text("bob", "lunch at noon?")
        await wait_for(lambda: row(bob, sent.id) is not None and row(alice2, sent.id) is not None)

        await alice.edit("bob", sent.id, "lunch at one?")
        for client in (bob, alice2, alice):
            got = await until(client, sent.id, lambda m: m.edited)
            assert got.text == "lunch at one?" and got.edits == ("lunch at noon?",)

        answer = await bob.reply("alice", sent.id, "yes!")
        quoted = await until(alice2, answer.id, lambda m: True)
        assert quoted.reply_to is not None
        assert (quoted.reply_to.id, quoted.reply_to.author) == (sent.id, "alice")

        await bob.react("alice", sent.id, "👍")
        await alice2.react("bob", sent.id, "🎉")  # from the linked device
        for client in (alice, alice2, bob):
            got = await until(client, sent.id, lambda m: len(m.reactions) == 2)
            assert dict(got.reactions) == {"bob": "👍", "alice": "🎉"}

        await alice.delete("bob", sent.id)
        for client in (bob, alice2, alice):
            got = await until(client, sent.id, lambda m: m.deleted)
            assert got.text is None and got.reactions == ()
        assert "delete" in kinds(ev_b) and "edit" in kinds(ev_a2)

        # disappearing messages: the timer reaches everyone; a message sent under it goes
        await bob.set_timer("alice", 30)
        await wait_for(lambda: message_ops.timer(alice2.store, "bob") == 30)
        await wait_for(lambda: message_ops.timer(alice.store, "bob") == 30)
        assert alice.timer("bob") == alice2.timer("bob") == bob.timer("alice") == 30
        short = await alice.send_text("bob", "this will vanish")
        await wait_for(lambda: row(bob, short.id) is not None and row(alice2, short.id) is not None)
        assert row(bob, short.id).expires_in == 30  # type: ignore[union-attr]
        await bob.mark_read("alice")
        later = time.time() + 31  # the clock, moved on (the sweeper runs every second)
        for client in (alice, alice2, bob):
            assert short.id in message_ops.sweep(client.store, later)
            assert row(client, short.id) is None
        assert "timer" in kinds(ev_a2)
    finally:
        await alice2.close()


async def test_operations_in_a_group(make_client: Factory) -> None:
    alice, bob, carol = [await make_client(n) for n in ("alice", "bob", "carol")]
    ev_c = collect(carol)
    for c in (alice, bob, carol):
        await c.connect()
    info = await alice.create_group("friends", ["bob", "carol"])
    await wait_for(lambda: len(bob.groups()) == 1 and len(carol.groups()) == 1)
    sent = await alice.send_text("group:friends", "pizza tonight?")
    await wait_for(lambda: row(bob, sent.id) is not None and row(carol, sent.id) is not None)
    await alice.edit("group:friends", sent.id, "pizza tomorrow?")
    await bob.react(info.conversation, sent.id, "🍕")
    await carol.react("group:" + info.group_id, sent.id, "👍")
    reply = await bob.reply("group:friends", sent.id, "sure")
    for client in (alice, bob, carol):
        got = await until(client, sent.id, lambda m: len(m.reactions) == 2 and m.edited)
        assert got.text == "pizza tomorrow?"
    await wait_for(lambda: row(carol, reply.id) is not None)
    assert row(carol, reply.id).reply_to.id == sent.id  # type: ignore[union-attr]
    # bob cannot delete alice's message for everyone
    with pytest.raises(ClientError):
        await bob.delete("group:friends", sent.id)
    await alice.delete("group:friends", sent.id)
    await until(carol, sent.id, lambda m: m.deleted)
    await carol.set_timer("group:friends", 3600)
    await wait_for(lambda: message_ops.timer(alice.store, info.conversation) == 3600)
    assert [m.text for m in alice.search("sure")] == ["sure"]
    assert [m.text for m in alice.search("pizza")] == []  # deleted
    assert kinds(ev_c).count("reaction") >= 1


async def test_delete_for_me_stays_deleted_when_a_copy_comes_again(make_client: Factory) -> None:
    """A message deleted for me is remembered: the sender's resend of the same message id
    under a new client id (after a lost answer) is not stored again and gets no receipt, and
    an edit aimed at it is dropped (not kept for later)."""
    alice, bob = await make_client("alice"), await make_client("bob")
    ev_a = collect(alice)
    for c in (alice, bob):
        await c.connect()
    sent = await alice.send_text("bob", "just once")
    await wait_for(lambda: row(bob, sent.id) is not None)
    await bob.delete("alice", sent.id, for_me=True)
    assert row(bob, sent.id) is None
    await wait_for(lambda: any(sent.id in getattr(e, "message_ids", ()) for e in ev_a))
    ev_a.clear()

    # alice resends the same message under a new client id (the relay takes it again)
    content = TextContent(text="just once", message_id=bytes.fromhex(sent.id), sent_at_ms=1)
    with alice.store.transaction():
        send = alice.protocol.encode_direct("bob", content)
    assert alice._socket is not None
    await alice._socket.send(send_frame(dataclasses.replace(send, client_id="resend-1")))
    await alice.edit("bob", sent.id, "just once more")
    marker = await alice.send_text("bob", "after")
    await wait_for(lambda: row(bob, marker.id) is not None)
    await wait_for(lambda: any(marker.id in getattr(e, "message_ids", ()) for e in ev_a))
    assert row(bob, sent.id) is None
    # no receipt for the copy
    assert not any(sent.id in getattr(e, "message_ids", ()) for e in ev_a)
    assert message_rules._load_pending(bob.store) == []


async def test_one_expiry_sweeper_per_client_however_often_it_connects(
    make_client: Factory,
) -> None:
    alice = await make_client("alice")

    def sweepers() -> list[asyncio.Task[object]]:
        return [
            t
            for t in asyncio.all_tasks()
            if not t.done() and getattr(t.get_coro(), "__qualname__", "") == "run_sweeper"
        ]

    await alice.connect(receive=False)
    await alice.connect()
    await alice.connect()
    assert len(sweepers()) == 1
    await alice.disconnect()
    assert sweepers() == []
    await alice.connect()
    assert len(sweepers()) == 1


async def _relay_lifetime(relay: Relay, client_id: str) -> int:
    """Seconds the relay keeps the send ``client_id`` undelivered (its stored expiry)."""
    async with relay.state.sessions() as session:
        send = (
            await session.execute(select(DeliverySend).where(DeliverySend.client_id == client_id))
        ).scalar_one()
    return (send.expires_at - send.created_at) // 1000


async def test_a_message_sent_under_a_timer_is_kept_by_the_relay_no_longer_than_the_timer(
    make_client: Factory, relay: Relay
) -> None:
    alice, bob = await make_client("alice"), await make_client("bob")
    await alice.connect()  # bob stays offline: everything waits in the relay's queue
    before = await alice.send_text("bob", "kept the usual 30 days")
    await alice.set_timer("bob", 30)
    vanishing = await alice.send_text("bob", "gone from the relay in 30 s")
    assert await _relay_lifetime(relay, before.id) == 30 * 24 * 3600
    assert await _relay_lifetime(relay, vanishing.id) == 30
    # In a group too (the sender-key distribution, which later messages need, is not capped).
    info = await alice.create_group("friends", ["bob"])
    await alice.set_timer(info.conversation, 3600)
    grouped = await alice.send_text(info.conversation, "gone within the hour")
    assert await _relay_lifetime(relay, grouped.id) == 3600
    async with relay.state.sessions() as session:
        lifetimes = {
            (s.expires_at - s.created_at) // 1000
            for s in (await session.execute(select(DeliverySend))).scalars()
        }
    assert lifetimes == {30 * 24 * 3600, 30, 3600}
    assert bob.store.get_message(vanishing.id) is None
