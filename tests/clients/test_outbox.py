"""The honest outbox, through a real relay that is stopped and restarted, with real ``vox``
processes: a send the relay cannot take is *queued* (exit 75, the id printed, ``vox status``
lists it), goes out once, and never overtakes or is overtaken by later messages of the same
conversation."""

from __future__ import annotations

from pathlib import Path

import pytest

from clients.sdk import DeliveryState, MessageQueued, MessageSent, VoxClient
from tests.clients.kit import RelayProcess, texts, vox, wait_for

EXIT_QUEUED = 75

# Many real `vox` processes: generous on a loaded machine (assert behaviour, not speed).
pytestmark = pytest.mark.timeout(600)


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
        code, _, err = await vox(a, "send", "bob", "zero")
        assert code == 0, err
        relay.stop()

        ids = []
        for text in ("one", "two"):
            code, out, err = await vox(a, "send", "bob", text)
            assert code == EXIT_QUEUED, err
            assert "queued, not yet accepted" in err and "Traceback" not in err
            ids.append(out.strip())
            assert len(ids[-1]) == 32  # the id, as on success
        code, out, err = await vox(a, "status")
        assert code == 0, err
        assert "queued: 2" in out and ids[0] in out and ids[1] in out

        await relay.start()
        code, out, err = await vox(a, "send", "bob", "three")  # goes out after one and two
        assert code == 0, err
        code, out, _ = await vox(a, "status")
        assert "queued: 0" in out

        bob = await VoxClient.open(b)
        try:
            events = await bob.receive(wait=1.0)
            assert texts(events, "alice") == ["zero", "one", "two", "three"]
            assert texts(await bob.receive(wait=0.5), "alice") == []  # nothing twice
        finally:
            await bob.close()
        alice = await VoxClient.open(a)
        try:
            assert [m.state for m in alice.history("bob")] == [DeliveryState.SENT] * 4
        finally:
            await alice.close()
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
            assert texts(await bob.receive(wait=1.0), "alice") == ["warm-up", "while down"]
        finally:
            await bob.close()
    finally:
        relay.stop()


async def test_a_message_refused_for_good_is_marked_failed_not_kept(tmp_path: Path) -> None:
    relay = RelayProcess(tmp_path / "relay", tmp_path / "relay.log")
    await relay.start()
    try:
        alice = await VoxClient.register(tmp_path / "a", relay.base_url, "alice")
        try:
            from clients.sdk import UnknownUser

            with pytest.raises(UnknownUser):
                await alice.send_text("nobody", "hello?")
            assert alice.queued() == []
        finally:
            await alice.close()
    finally:
        relay.stop()
