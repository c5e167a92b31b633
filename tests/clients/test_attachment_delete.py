"""A file message withdrawn by its sender takes its blob off the relay
(``DELETE /v1/attachments/{id}``, docs/protocol-ws.md §9.2): deleted for everyone after it
left — at once, or when a DELETE queued while the relay was down goes out, also from a later
process —, or cancelled while it was still queued. Real clients, a real relay."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import NoReturn

import pytest

from clients.sdk import Message, MessageQueued, VoxClient, Withdrawn
from clients.sdk.errors import RelayUnavailable
from clients.sdk.transport import RelaySocket
from crypto.attachments import AttachmentPointer
from server.errors import NotFound
from tests.clients.conftest import Factory
from tests.clients.kit import RelayProcess, receive_until, wait_for
from tests.server.relay_harness import Relay


def blob_of(client: VoxClient, message_id: str) -> str:
    stored = client.store.get_message(message_id)
    assert stored is not None and stored.attachment is not None
    return AttachmentPointer.from_bytes(bytes.fromhex(str(stored.attachment["pointer"]))).blob_id


async def stored_on(relay: Relay, blob_id: str) -> bool:
    try:
        await relay.state.attachments.lookup(blob_id)
    except NotFound:
        return False
    return True


async def test_a_file_deleted_for_everyone_is_deleted_on_the_relay(
    make_client: Factory, relay: Relay, tmp_path: Path
) -> None:
    alice, bob = await make_client("alice"), await make_client("bob")
    got: list[Message] = []
    bob.on_event(lambda e: got.append(e) if isinstance(e, Message) and e.attachment else None)
    await alice.connect()
    await bob.connect()
    source = tmp_path / "plan.txt"
    source.write_bytes(b"the plan" * 1000)
    sent = await alice.send_file("bob", source)
    await wait_for(lambda: bool(got))
    blob_id = blob_of(alice, sent.id)
    assert await stored_on(relay, blob_id)

    await alice.delete("bob", sent.id)
    assert not await stored_on(relay, blob_id)
    await wait_for(lambda: (m := bob.store.get_message(sent.id)) is not None and m.deleted)


async def test_a_queued_file_message_cancelled_takes_its_blob_with_it(
    make_client: Factory, relay: Relay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """alice's WebSocket cannot connect, REST works: the file is uploaded, its message
    queued, never handed to the relay; deleting it withdraws it and deletes the blob."""
    alice = await make_client("alice")
    await make_client("bob")

    async def unreachable(*args: object, **kwargs: object) -> NoReturn:
        raise RelayUnavailable(relay.base_url, "the test keeps the WebSocket down")

    monkeypatch.setattr(RelaySocket, "connect", unreachable)
    source = tmp_path / "draft.txt"
    source.write_bytes(b"draft" * 1000)
    with pytest.raises(MessageQueued) as queued:
        await alice.send_file("bob", source)
    mid = queued.value.message_id
    blob_id = blob_of(alice, mid)
    assert await stored_on(relay, blob_id)

    assert await alice.delete("bob", mid, for_me=True) == Withdrawn(mid)
    assert alice.store.get_message(mid) is None
    assert not await stored_on(relay, blob_id)


@asynccontextmanager
async def alice_and_bob(tmp_path: Path) -> AsyncIterator[tuple[RelayProcess, VoxClient]]:
    """A relay process (stopped at the end) and alice's client, bob registered (closed)."""
    relay = RelayProcess(tmp_path / "relay", tmp_path / "relay.log")
    await relay.start()
    try:
        alice = await VoxClient.register(tmp_path / "alice", relay.base_url, "alice")
        bob = await VoxClient.register(tmp_path / "bob", relay.base_url, "bob")
        await bob.close()
        yield relay, alice
    finally:
        relay.stop()


def on_disk(relay: RelayProcess, blob_id: str) -> bool:
    """Whether the relay process still stores the blob (its attachment store's file)."""
    return (relay.data_dir / "attachments" / blob_id[:2] / blob_id).is_file()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("restarted", [False, True], ids=["same-process", "restarted"])
async def test_a_file_deleted_for_everyone_while_the_relay_is_down_loses_its_blob_later(
    tmp_path: Path, restarted: bool
) -> None:
    """The DELETE is queued (the relay is down); when it goes out — from the same client once
    the relay is back, or from a new process of the profile — the blob is deleted too."""
    async with alice_and_bob(tmp_path) as (relay, alice):
        await alice.connect()
        source = tmp_path / "plan.txt"
        source.write_bytes(b"the plan" * 1000)
        sent = await alice.send_file("bob", source)
        blob_id = blob_of(alice, sent.id)
        assert on_disk(relay, blob_id)

        relay.stop()
        alice.engine.sends.offline_patience = 0.5
        with pytest.raises(MessageQueued):
            await alice.delete("bob", sent.id)
        if restarted:
            await alice.close()
        await relay.start()
        assert on_disk(relay, blob_id)  # nothing went out while the relay was down
        if restarted:
            alice = await VoxClient.open(tmp_path / "alice")
            await alice.connect()
        await wait_for(lambda: alice.operations() == [], within=120)  # the DELETE went out
        await wait_for(lambda: not on_disk(relay, blob_id), within=120)
        await alice.close()
        bob = await VoxClient.open(tmp_path / "bob")
        try:

            def deleted(_: object) -> bool:
                stored = bob.store.get_message(sent.id)
                return stored is not None and stored.deleted

            await receive_until(bob, deleted, within=120)
        finally:
            await bob.close()


@pytest.mark.timeout(600)
async def test_a_queued_file_message_cancelled_while_the_relay_is_down_loses_its_blob_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is uploaded but its message stays queued (the WebSocket cannot connect);
    then the relay is down when the message is withdrawn: its blob is deleted on the next
    connection, by a new process of the profile."""
    async with alice_and_bob(tmp_path) as (relay, alice):
        connect = RelaySocket.connect

        async def unreachable(*args: object, **kwargs: object) -> NoReturn:
            raise RelayUnavailable(relay.base_url, "the test keeps the WebSocket down")

        monkeypatch.setattr(RelaySocket, "connect", unreachable)
        alice.engine.sends.offline_patience = 0.5
        source = tmp_path / "draft.txt"
        source.write_bytes(b"draft" * 1000)
        with pytest.raises(MessageQueued) as queued:
            await alice.send_file("bob", source)
        mid = queued.value.message_id
        blob_id = blob_of(alice, mid)
        assert on_disk(relay, blob_id)

        relay.stop()
        assert await alice.delete("bob", mid) == Withdrawn(mid)
        await alice.close()
        monkeypatch.setattr(RelaySocket, "connect", connect)
        await relay.start()
        assert on_disk(relay, blob_id)
        alice = await VoxClient.open(tmp_path / "alice")
        try:
            await alice.connect()
            await wait_for(lambda: not on_disk(relay, blob_id), within=120)
        finally:
            await alice.close()
