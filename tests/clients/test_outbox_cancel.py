"""Deleting our own message while it is still in the outbox, through a real relay process.

Never handed to the relay: the send is cancelled (for me and for everyone alike) — nobody
receives it, no DELETE goes out, and the edits and reactions queued on it are cancelled too.
Already handed to the relay (answer pending): it cannot be recalled — for me it goes from
this device only, for everyone a DELETE follows it in order.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from clients.daemon import serving, socket_path
from clients.daemon.remote import RemoteApi
from clients.sdk import (
    ClientError,
    Event,
    Message,
    MessageQueued,
    MessageUpdate,
    VoxClient,
    Withdrawn,
)
from clients.sdk.sendqueue import SendQueue, Transmit
from tests.clients.kit import RelayProcess, receive_until, texts, vox, wait_for

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[RelayProcess]:
    """A real relay process (stopped and started again by the tests)."""
    process = RelayProcess(tmp_path / "relay", tmp_path / "relay.log")
    await process.start()
    try:
        yield process
    finally:
        if process.proc is not None:
            process.proc.send_signal(signal.SIGCONT)
        process.stop()


async def _pair(tmp_path: Path, relay: RelayProcess) -> None:
    """Alice and Bob registered; Alice sent Bob ``warm-up``. No client left open."""
    alice = await VoxClient.register(tmp_path / "a", relay.base_url, "alice")
    bob = await VoxClient.register(tmp_path / "b", relay.base_url, "bob")
    await bob.close()
    try:
        await alice.send_text("bob", "warm-up")
    finally:
        await alice.close()


async def _bob_until(tmp_path: Path, done: Callable[[list[Event]], bool]) -> list[Event]:
    """Bob's events until ``done(events)``."""
    bob = await VoxClient.open(tmp_path / "b")
    try:
        return await receive_until(bob, done)
    finally:
        await bob.close()


def _text(last: str) -> Callable[[list[Event]], bool]:
    return lambda events: last in texts(events, "alice")


def _updates(events: list[Event]) -> list[tuple[str, str | None]]:
    return [(e.kind, e.target) for e in events if isinstance(e, MessageUpdate)]


@pytest.mark.parametrize("for_me", [True, False], ids=["for-me", "for-everyone"])
async def test_a_queued_message_deleted_before_it_left_reaches_no_one(
    tmp_path: Path, relay: RelayProcess, for_me: bool
) -> None:
    await _pair(tmp_path, relay)
    relay.stop()
    alice = await VoxClient.open(tmp_path / "a")
    secret = secrets.token_hex(16)
    try:
        with pytest.raises(MessageQueued):
            await alice.send_text("bob", "secret", message_id=secret)
        with pytest.raises(MessageQueued):
            await alice.edit("bob", secret, "secret, edited")
        with pytest.raises(MessageQueued):
            await alice.react("bob", secret, "👍")
        assert [m.id for m in alice.queued()] == [secret]
        assert [(o.kind, o.target) for o in alice.operations()] == [
            ("edit", secret), ("reaction", secret),
        ]  # fmt: skip
    finally:
        await alice.close()

    # `vox delete` says what happened: withdrawn, not "deleted on this device".
    code, out, err = await vox(
        tmp_path / "a", "delete", "bob", secret, *(["--for-me"] if for_me else [])
    )
    assert code == 0, err
    assert out.strip() == "withdrawn before sending: it reached no one"

    alice = await VoxClient.open(tmp_path / "a")
    try:
        # Withdrawn at once, with the operations queued on it: nothing left to send or show.
        assert alice.queued() == [] and alice.operations() == []
        assert alice.store.outbox_pending() == []
        assert alice.store.get_message(secret) is None
        assert [m.text for m in alice.history("bob")] == ["warm-up"]
    finally:
        await alice.close()
    code, out, err = await vox(tmp_path / "a", "status")
    assert code == 0, err
    assert "queued: 0" in out and secret not in out

    await relay.start()
    alice = await VoxClient.open(tmp_path / "a")
    try:
        await alice.connect()
        await alice.send_text("bob", "after")
        assert alice.outbox.pending() == []
    finally:
        await alice.close()
    events = await _bob_until(tmp_path, _text("after"))
    assert texts(events, "alice") == ["warm-up", "after"]  # no "secret", no operation on it
    assert _updates(events) == []
    assert not any(isinstance(e, Message) and e.id == secret for e in events)


async def test_the_daemon_tells_a_withdrawn_delete_from_a_delete_for_me(
    tmp_path: Path, relay: RelayProcess
) -> None:
    """JSON-RPC ``delete``: ``null`` for me (as before); a withdrawn send answers like a send
    that reached no device, plus ``"withdrawn": true`` (an older caller still reads it)."""
    await _pair(tmp_path, relay)
    relay.stop()
    home = tmp_path / "a"
    alice = await VoxClient.open(home)
    first, second = secrets.token_hex(16), secrets.token_hex(16)
    try:
        for mid in (first, second):
            with pytest.raises(MessageQueued):
                await alice.send_text("bob", mid, message_id=mid)
        warm_up = alice.history("bob")[0].id
        async with serving(alice, home):
            request = {"jsonrpc": "2.0", "id": 1, "method": "delete",
                       "params": {"to": "bob", "id": first}}  # fmt: skip
            request_for_me = {"jsonrpc": "2.0", "id": 2, "method": "delete",
                              "params": {"to": "bob", "id": warm_up, "for_me": True}}  # fmt: skip
            answers = await _raw(socket_path(home), request, request_for_me)
            assert answers[0]["result"] == {
                "id": first, "accepted_at": None, "devices": 0, "withdrawn": True,
            }  # fmt: skip
            assert answers[1]["result"] is None
            api = await RemoteApi.connect(socket_path(home))
            try:
                assert await api.delete("bob", second, for_me=True) == Withdrawn(second)
            finally:
                await api.close()
        assert alice.queued() == [] and alice.history("bob") == []
    finally:
        await alice.close()


async def _raw(path: Path, *requests: dict[str, object]) -> list[dict[str, Any]]:
    """The daemon's answers to ``requests`` (one connection, one at a time)."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        answers = []
        for request in requests:
            writer.write(json.dumps(request).encode() + b"\n")
            await writer.drain()
            answers.append(json.loads(await reader.readline()))
        return answers
    finally:
        writer.close()


async def test_a_reply_to_a_cancelled_message_is_still_sent(
    tmp_path: Path, relay: RelayProcess
) -> None:
    await _pair(tmp_path, relay)
    relay.stop()
    alice = await VoxClient.open(tmp_path / "a")
    secret = secrets.token_hex(16)
    try:
        with pytest.raises(MessageQueued):
            await alice.send_text("bob", "secret", message_id=secret)
        with pytest.raises(MessageQueued):
            await alice.reply("bob", secret, "my reply")
        await alice.delete("bob", secret)
        assert [m.text for m in alice.queued()] == ["my reply"]
    finally:
        await alice.close()
    await relay.start()
    alice = await VoxClient.open(tmp_path / "a")
    try:
        await alice.connect()
        await alice.send_text("bob", "after")
    finally:
        await alice.close()
    events = await _bob_until(tmp_path, _text("after"))
    assert texts(events, "alice") == ["warm-up", "my reply", "after"]
    assert _updates(events) == []


@pytest.mark.parametrize("for_me", [True, False], ids=["for-me", "for-everyone"])
async def test_a_message_already_handed_to_the_relay_is_not_recalled(
    tmp_path: Path, relay: RelayProcess, for_me: bool
) -> None:
    await _pair(tmp_path, relay)
    alice = await VoxClient.open(tmp_path / "a")
    flying = secrets.token_hex(16)
    assert relay.proc is not None
    try:
        await alice.connect()
        await alice.send_text("bob", "ready")  # device lists fresh: no HTTP needed below
        # The relay stops reading: the frame is written, its answer does not come.
        relay.proc.send_signal(signal.SIGSTOP)
        send = asyncio.create_task(alice.send_text("bob", "flying", message_id=flying))
        await wait_for(lambda: any(e.attempts for e in alice.outbox.pending()), 60)

        delete = asyncio.create_task(alice.delete("bob", flying, for_me=for_me))
        if for_me:
            assert await delete is None
            assert alice.store.get_message(flying) is None  # gone here at once
        relay.proc.send_signal(signal.SIGCONT)
        assert (await send).id == flying  # it went out all the same
        if not for_me:
            assert (await delete) is not None  # a DELETE followed it
            assert alice.store.get_message(flying).deleted  # type: ignore[union-attr]
        await wait_for(lambda: alice.outbox.pending() == [], 60)
        if for_me:
            assert alice.store.get_message(flying) is None  # still deleted here
    finally:
        relay.proc.send_signal(signal.SIGCONT)
        await alice.close()
    if for_me:
        events = await _bob_until(tmp_path, _text("flying"))
    else:
        events = await _bob_until(tmp_path, lambda ev: ("delete", flying) in _updates(ev))
    assert texts(events, "alice") == ["warm-up", "ready", "flying"]
    assert _updates(events) == ([] if for_me else [("delete", flying)])


async def test_a_send_picked_for_sending_but_not_yet_built_is_cancelled_with_no_trace(
    tmp_path: Path, relay: RelayProcess
) -> None:
    """The pump already chose the send (its build waits for the builder) when the delete
    comes: the build is skipped, nothing is written, nothing reaches Bob."""
    await _pair(tmp_path, relay)
    alice = await VoxClient.open(tmp_path / "a")
    secret = secrets.token_hex(16)
    try:
        await alice.connect()
        await alice.send_text("bob", "ready")
        pipeline = alice.pipeline
        pipeline._building = pipeline._holding = True  # held: the picked sends wait in the queue
        try:
            send = asyncio.create_task(alice.send_text("bob", "secret", message_id=secret))
            await wait_for(lambda: any(r.key == secret for r in pipeline._queue))
            assert await alice.delete("bob", secret) == Withdrawn(secret)
            with pytest.raises(ClientError, match="deleted before it was sent"):
                await send
        finally:
            pipeline._building = pipeline._holding = False  # the next send starts the builder
        await alice.send_text("bob", "after")
        assert alice.outbox.pending() == [] and secret not in alice.engine.sends
    finally:
        await alice.close()
    events = await _bob_until(tmp_path, _text("after"))
    assert texts(events, "alice") == ["warm-up", "ready", "after"]
    assert _updates(events) == []


# --- the engine's part (sans-I/O) ------------------------------------------------------------


def test_the_engine_cancels_a_send_only_while_none_of_its_frames_was_written() -> None:
    q = SendQueue(lane_window=4)
    q.connection_up(0.0)
    sent = [q.submit(k, {"bob"}, 0.0, lane="bob") for k in ("a", "b", "c")]
    assert [type(a[0]) for a in sent] == [Transmit, Transmit, Transmit]
    assert q.expect("a", 0, ["a"], 0.0) == []
    assert q.cancel("a", 0.0) is None  # written: it may be at the relay already
    assert q.cancel("b", 0.0) == []  # picked, not written (the shell checks it is not built)
    assert q.lane("bob") == ["a", "c"]
    q.expect("c", 0, ["c"], 0.0)
    assert q.predecessor("c") == "a"  # the fence skips the cancelled send
    assert q.cancel("nothing", 0.0) == []


def test_cancelling_a_queued_head_lets_its_lane_go_on() -> None:
    q = SendQueue(lane_window=1)
    for key in ("a", "b"):  # reloaded from the outbox, held until the next connection
        assert q.submit(key, {"bob"}, 0.0, lane="bob", durable=True, queued=True) == []
    assert q.queued() == ["a", "b"]
    assert q.cancel("a", 0.0) == []  # offline: nothing goes yet
    assert q.lane("bob") == ["b"]
    actions = q.connection_up(1.0)
    assert [(a.key, type(a)) for a in actions] == [("b", Transmit)]
