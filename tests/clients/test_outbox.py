"""The honest outbox, through a real relay that is stopped and restarted, with real ``vox``
processes: a send the relay cannot take is *queued* (exit 75, the id printed, ``vox status``
lists it), goes out once, and never overtakes or is overtaken by later messages of the same
conversation."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from clients.sdk import (
    DeliveryState,
    Event,
    Message,
    MessageQueued,
    MessageSent,
    UnknownUser,
    VoxClient,
)
from clients.sdk.models import MessageUpdate
from tests.clients.conftest import Factory
from tests.clients.kit import (
    RelayProcess,
    receive_texts,
    receive_until,
    texts,
    vox,
    wait_for,
)

EXIT_QUEUED = 75

# Many real `vox` processes: generous on a loaded machine (assert behaviour, not speed).
pytestmark = pytest.mark.timeout(600)


def conversation(events: list[Event]) -> list[str | None]:
    """Messages (their texts) and updates (their kinds), in the order they arrived."""
    return [
        e.text if isinstance(e, Message) else e.kind
        for e in events
        if isinstance(e, Message | MessageUpdate)
    ]


async def test_sends_while_the_relay_is_down_are_queued_and_delivered_once_in_order(
    tmp_path: Path,
) -> None:
    relay = RelayProcess(tmp_path / "relay", tmp_path / "relay.log")
    await relay.start()
    a, b = tmp_path / "a", tmp_path / "b"
    try:
        for home, name in ((a, "alice"), (b, "bob")):
            code, _, err = await vox(home, "register", name, "--server", relay.base_url)
            assert code == 0, err
        code, out, err = await vox(a, "send", "bob", "zero")
        assert code == 0, err
        zero = out.strip()
        relay.stop()

        ids = []
        for args in (
            ("send", "bob", "one"),
            ("edit", "bob", zero, "zero, edited"),  # edits, reactions, deletes and timer
            ("react", "bob", zero, "👍"),  # changes queue like texts, in the same order
            ("send", "bob", "two"),
            ("disappear", "bob", "off"),
        ):
            code, out, err = await vox(a, *args)
            assert code == EXIT_QUEUED, (args, err)
            assert "queued, not yet accepted" in err and "Traceback" not in err
            ids.append(out.strip())
            assert len(ids[-1]) == 32  # the id, as on success
        # "one", itself still queued and never handed to the relay: withdrawn, never sent
        # (nor a DELETE of it); the rest of the queue keeps its order.
        code, out, err = await vox(a, "delete", "bob", ids[0])
        assert code == 0, err
        code, out, err = await vox(a, "status")
        assert code == 0, err
        assert ids[3] in out and ids[0] not in out  # the queued text "two" is listed

        await relay.start()
        code, out, err = await vox(a, "send", "bob", "three")  # goes out after one and two
        assert code == 0, err
        code, out, _ = await vox(a, "status")
        assert "queued: 0" in out

        bob = await VoxClient.open(b)
        try:
            events = await receive_until(bob, lambda evs: "three" in texts(evs, "alice"))
            assert texts(events, "alice") == ["zero", "two", "three"]
            expected = ["zero", "edit", "reaction", "two", "timer", "three"]
            assert conversation(events) == expected
            assert texts(await bob.receive(wait=0.5), "alice") == []  # nothing twice
            shown = [m.text for m in bob.history("alice")]
            assert shown[0] == "zero, edited" and "one" not in shown
        finally:
            await bob.close()
        alice = await VoxClient.open(a)
        try:
            states = [m.state for m in alice.history("bob")]
            assert states == [DeliveryState.SENT] * len(states) and alice.queued() == []
        finally:
            await alice.close()
    finally:
        relay.stop()


async def test_a_conversation_keeps_its_order_across_relay_and_client_restarts(
    tmp_path: Path,
) -> None:
    relay = RelayProcess(tmp_path / "relay", tmp_path / "relay.log")
    await relay.start()
    try:
        alice = await VoxClient.register(tmp_path / "a", relay.base_url, "alice")
        bob = await VoxClient.register(tmp_path / "b", relay.base_url, "bob")
        await bob.close()
        await alice.connect()
        await alice.send_text("bob", "zero")
        # As after a quiet minute, every send refetches bob's device list first.
        alice.engine.device_list_ttl = 0
        alice.engine.sends.offline_patience = 300  # a loaded machine restarts relays slowly
        relay.stop()
        # Sent while the connection is down: held until the client has reconnected ...
        first = asyncio.create_task(alice.send_text("bob", "one"))
        await asyncio.sleep(0.3)
        await relay.start()
        await wait_for(lambda: alice.connected, within=60)
        # ... and a message written right after the reconnection never overtakes it.
        await alice.send_text("bob", "two")
        await first
        # Queued while the relay is down, then the client process ends: a new process sends
        # them in the order they were written, before a newer message.
        relay.stop()
        alice.engine.sends.offline_patience = 0.5
        down = await asyncio.gather(
            alice.send_text("bob", "three"), alice.send_text("bob", "four"), return_exceptions=True
        )
        assert [type(r) for r in down] == [MessageQueued, MessageQueued]
        await alice.close()
        await relay.start()
        alice = await VoxClient.open(tmp_path / "a")
        await alice.send_text("bob", "five")
        assert alice.queued() == []
        await alice.close()
        bob = await VoxClient.open(tmp_path / "b")
        try:
            got = texts(await receive_texts(bob, "alice", 6), "alice")
            assert got == ["zero", "one", "two", "three", "four", "five"]
        finally:
            await bob.close()
    finally:
        relay.stop()


async def test_a_connected_client_queues_then_sends_and_announces_it(tmp_path: Path) -> None:
    relay = RelayProcess(tmp_path / "relay", tmp_path / "relay.log")
    await relay.start()
    try:
        alice = await VoxClient.register(tmp_path / "a", relay.base_url, "alice")
        bob = await VoxClient.register(tmp_path / "b", relay.base_url, "bob")
        await bob.close()
        await alice.send_text("bob", "warm-up")
        await alice.close()
        relay.stop()
        alice = await VoxClient.open(tmp_path / "a")
        events: list[object] = []
        alice.on_event(events.append)
        with pytest.raises(MessageQueued) as queued:
            await alice.send_text("bob", "while down")
        assert [m.text for m in alice.queued()] == ["while down"]
        assert alice.history("bob")[-1].state is DeliveryState.PENDING
        await relay.start()
        await alice.connect()  # the outbox is drained after (re)connecting
        await wait_for(lambda: any(isinstance(e, MessageSent) for e in events))
        sent = [e for e in events if isinstance(e, MessageSent)]
        assert [s.message_id for s in sent] == [queued.value.message_id]
        assert alice.queued() == []
        assert alice.history("bob")[-1].state is DeliveryState.SENT
        await alice.close()
        bob = await VoxClient.open(tmp_path / "b")
        try:
            got = texts(await receive_texts(bob, "alice", 2), "alice")
            assert got == ["warm-up", "while down"]
        finally:
            await bob.close()
    finally:
        relay.stop()


async def test_a_message_refused_for_good_is_marked_failed_not_kept(
    make_client: Factory,
) -> None:
    alice = await make_client("alice")
    with pytest.raises(UnknownUser):
        await alice.send_text("nobody", "hello?")
    assert alice.queued() == []
