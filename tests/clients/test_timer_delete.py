"""Deleting a disappearing-timer change's row, through a real relay process (stopped and
started again) and real ``vox`` processes: a change withdrawn before it left is undone here
too (this device and its peers keep the same timer); a change that left is a setting every
member keeps — delete for everyone is refused, and receivers ignore a DELETE of it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from clients.sdk import (
    Event,
    Message,
    MessageQueued,
    MessageUpdate,
    NotDeletableForEveryone,
    VoxClient,
    Withdrawn,
)
from clients.sdk.content import DeleteContent
from clients.tui import ChatApp, SdkBackend
from tests.clients.kit import RelayProcess, receive_until, texts, vox
from tests.clients.test_outbox_operations import _pair, relay
from tests.clients.test_tui import People, people, shown, type_line, until

__all__ = ["people", "relay"]  # the fixtures, used by name

pytestmark = pytest.mark.timeout(600)

HOUR, DAY = 3600, 86400


async def _hour_timer(tmp_path: Path, relay: RelayProcess) -> str:
    """Alice and Bob registered; Alice set their timer to 1 hour (accepted). Its id."""
    await _pair(tmp_path, relay)
    alice = await VoxClient.open(tmp_path / "a")
    try:
        result = await alice.set_timer("bob", HOUR)
        assert result is not None
        return result.id
    finally:
        await alice.close()


async def _bob_until_text(tmp_path: Path, last: str) -> tuple[list[Event], VoxClient]:
    """Bob's events until Alice's text ``last``; Bob stays open (the caller closes him)."""
    bob = await VoxClient.open(tmp_path / "b")
    return await receive_until(bob, lambda events: last in texts(events, "alice")), bob


async def test_a_queued_timer_change_withdrawn_is_undone_here_too(
    tmp_path: Path, relay: RelayProcess
) -> None:
    await _hour_timer(tmp_path, relay)
    relay.stop()
    alice = await VoxClient.open(tmp_path / "a")
    try:
        with pytest.raises(MessageQueued) as day:
            await alice.set_timer("bob", DAY)
        with pytest.raises(MessageQueued) as off:
            await alice.set_timer("bob", 0)
        assert alice.timer("bob") == 0
        # The older one withdrawn: the newer one still stands here (and will be sent) ...
        first = day.value.message_id
        withdrawn = await alice.delete("bob", first)
        assert alice.timer("bob") == 0
    finally:
        await alice.close()
    # ... and withdrawing that too brings back the timer from before both (1 hour, not 1 day).
    second = off.value.message_id
    code, out, err = await vox(tmp_path / "a", "delete", "bob", second)
    assert code == 0, err
    await relay.start()
    alice = await VoxClient.open(tmp_path / "a")
    try:
        assert alice.timer("bob") == HOUR  # this device agrees with Bob again
        assert withdrawn == Withdrawn(first, 0)
        assert out.strip() == (
            "withdrawn before sending: it reached no one (disappearing messages: 1 hour)"
        )
        await alice.connect()
        sent = await alice.send_text("bob", "after")  # under the timer Bob has too
        assert alice.outbox.pending() == []
    finally:
        await alice.close()
    events, bob = await _bob_until_text(tmp_path, "after")
    try:
        assert bob.timer("alice") == HOUR  # the same timer on both sides
        timers = [e.seconds for e in events if isinstance(e, MessageUpdate) and e.kind == "timer"]
        assert timers == [HOUR]  # the change before; neither withdrawn one
        after = next(e for e in events if isinstance(e, Message) and e.id == sent.id)
        assert after.expires_in == HOUR
    finally:
        await bob.close()


async def test_a_sent_timer_change_cannot_be_deleted_for_everyone(
    tmp_path: Path, relay: RelayProcess
) -> None:
    timer_id = await _hour_timer(tmp_path, relay)
    alice = await VoxClient.open(tmp_path / "a")
    try:
        with pytest.raises(NotDeletableForEveryone) as refused:
            await alice.delete("bob", timer_id)
        assert refused.value.message_id == timer_id
        assert alice.operations() == [] and alice.store.outbox_pending() == []
    finally:
        await alice.close()
    code, out, err = await vox(tmp_path / "a", "delete", "bob", timer_id)
    assert code == 1 and out == ""
    assert "a disappearing-timer change cannot be deleted for everyone" in err

    # Delete for me stays: the row goes from this device, the timer stands.
    code, out, err = await vox(tmp_path / "a", "delete", "bob", timer_id, "--for-me")
    assert (code, out.strip()) == (0, "deleted on this device"), err
    alice = await VoxClient.open(tmp_path / "a")
    try:
        assert alice.timer("bob") == HOUR
        assert timer_id not in [m.id for m in alice.history("bob")]
        # A client without the rule sends the DELETE anyway: receivers ignore it.
        await alice.connect()
        delete = DeleteContent(
            target=bytes.fromhex(timer_id), group_id=b"", sent_at_ms=int(time.time() * 1000)
        )
        await alice.outbox.send("bob", delete)
        await alice.send_text("bob", "after")
    finally:
        await alice.close()
    events, bob = await _bob_until_text(tmp_path, "after")
    try:
        row = next(m for m in bob.history("alice") if m.id == timer_id)
        assert row.timer == HOUR and not row.deleted
        assert bob.timer("alice") == HOUR
        assert not [e for e in events if isinstance(e, MessageUpdate) and e.kind == "delete"]
    finally:
        await bob.close()


async def test_the_tui_says_a_sent_timer_change_cannot_be_deleted_for_everyone(
    people: People,
) -> None:
    result = await people.alice.set_timer("bob", HOUR)
    assert result is not None
    app = ChatApp(SdkBackend(people.alice), open_conversation="bob")
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: shown(app, "you set disappearing messages to 1 hour"))
        await type_line(pilot, f"/delete {result.id[:6]}")
        said = "/delete: a disappearing-timer change cannot be deleted for everyone"
        await until(pilot, lambda: shown(app, said))
        assert result.id in app.shown and people.alice.timer("bob") == HOUR
