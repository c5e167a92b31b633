"""Groups (with removal and key rotation), attachments, multi-device linking and key changes."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest
from sqlalchemy import delete

from clients.sdk import (
    AttachmentError,
    DeviceRemoved,
    Event,
    GroupChanged,
    KeyChanged,
    LinkCodeExpired,
    LinkCodeMalformed,
    LinkTimeout,
    Message,
    SignedOut,
    UntrustedIdentity,
    VoxClient,
)
from clients.sdk.content import PayloadKind, RelayPayload
from clients.sdk.linkstate import format_code
from crypto.sender_keys import SenderKeyMessage
from server.db.models import Account
from tests.clients.conftest import Factory
from tests.clients.kit import texts, wait_for
from tests.server.relay_harness import Relay


def partial_files(directory: Path) -> list[Path]:
    """Leftover ``.part`` files of an interrupted download."""
    return [p for p in directory.iterdir() if p.name.endswith(".part")]


def collect(client: VoxClient) -> list[Event]:
    events: list[Event] = []
    client.on_event(events.append)
    return events


async def connected_pair(
    make_client: Factory,
) -> tuple[VoxClient, VoxClient, list[Event], list[Event]]:
    """Alice and bob, connected, with the events each received so far."""
    alice, bob = await make_client("alice"), await make_client("bob")
    ev_a, ev_b = collect(alice), collect(bob)
    await alice.connect()
    await bob.connect()
    return alice, bob, ev_a, ev_b


async def test_group_messages_reach_members_and_removal_rotates_keys(
    make_client_on_both: Factory,
) -> None:
    make_client = make_client_on_both  # this one runs on SQLite and PostgreSQL
    alice, bob, carol = [await make_client(n) for n in ("alice", "bob", "carol")]
    ev_b, ev_c = collect(bob), collect(carol)
    raw_c: list[bytes] = []
    for c in (alice, bob, carol):
        await c.connect()
    info = await alice.create_group("friends", ["bob", "carol"])
    assert info.members == ("alice", "bob", "carol")
    await wait_for(lambda: len(bob.groups()) == 1 and len(carol.groups()) == 1)
    assert any(isinstance(e, GroupChanged) and e.action == "create" for e in ev_b)

    await alice.send_group_text(info.group_id, "hello group")
    await bob.send_group_text("friends", "hi from bob")
    await wait_for(lambda: len(texts(ev_c, "alice")) == 1 and len(texts(ev_c, "bob")) == 1)
    assert texts(ev_b, "alice") == ["hello group"]
    message = next(e for e in ev_c if isinstance(e, Message) and e.sender == "alice")
    assert message.conversation == f"group:{info.group_id}" and message.group_id == info.group_id

    # Carol keeps a copy of every ciphertext she is sent from now on (she is "compromised").
    original = carol.protocol.receive

    def spy(envelope):  # type: ignore[no-untyped-def]
        raw_c.append(envelope.data)
        return original(envelope)

    carol.protocol.receive = spy  # type: ignore[method-assign]
    await alice.remove_members(info.group_id, ["carol"])
    await wait_for(lambda: carol.groups() == [] and bob.groups()[0].members == ("alice", "bob"))
    await alice.send_group_text(info.group_id, "after carol left")
    await bob.send_group_text(info.group_id, "bob after carol left")
    await wait_for(lambda: texts(ev_b, "alice") == ["hello group", "after carol left"])
    assert texts(ev_c, "alice") == ["hello group"]  # nothing new reached carol's history
    # Even if a removed member obtained the new ciphertexts, her old sender keys do not open them.
    group_id = bytes.fromhex(info.group_id)
    for sender in ("alice", "bob"):
        stored = carol.store.load_sender_key(info.group_id, sender, 1)
        assert stored is None  # carol forgot the group (and its keys)
    assert all(
        RelayPayload.from_bytes(d).kind is not PayloadKind.GROUP
        or SenderKeyMessage.from_bytes(RelayPayload.from_bytes(d).data).group_id != group_id
        for d in raw_c
    )


async def test_removed_member_cannot_decrypt_with_the_keys_she_held(make_client: Factory) -> None:
    alice, bob = await make_client("alice"), await make_client("bob")
    ev_b = collect(bob)
    await alice.connect()
    await bob.connect()
    info = await alice.create_group("pair", ["bob"])
    await alice.send_group_text(info.group_id, "before")
    await wait_for(lambda: texts(ev_b, "alice") == ["before"])
    group_id = bytes.fromhex(info.group_id)
    stolen = bob.protocol.groups.receiving(group_id, alice.identity.address)
    assert stolen is not None
    await alice.remove_members(info.group_id, ["bob"])
    new_state = alice.protocol.groups.own_key(group_id)
    assert new_state.key_id != stolen.key_id  # rotated
    message = new_state.encrypt(b"secret after removal")
    from crypto.errors import VoxError

    with pytest.raises(VoxError):
        stolen.decrypt(message)


async def test_ten_mebibyte_attachment_round_trip_with_digest(
    make_client: Factory, tmp_path: Path, relay: Relay
) -> None:
    alice, bob = await make_client("alice"), await make_client("bob")
    ev_b = collect(bob)
    await alice.connect()
    await bob.connect()
    source = tmp_path / "big.bin"
    data = os.urandom(10 * 1024 * 1024)
    source.write_bytes(data)
    progress: list[tuple[int, int]] = []
    await alice.send_file(
        "bob", source, progress=lambda done, total: progress.append((done, total))
    )
    assert progress and progress[-1][0] == progress[-1][1] >= len(data)
    await wait_for(lambda: any(isinstance(e, Message) and e.attachment for e in ev_b))
    message = next(e for e in ev_b if isinstance(e, Message) and e.attachment)
    assert message.attachment is not None and message.attachment.size == len(data)
    out = await bob.download(message, tmp_path / "got.bin")
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(data).digest()
    saved = bob.store.get_message(message.id)
    assert saved is not None and saved.attachment is not None
    assert saved.attachment["path"] == str(out)  # the history records where the file was saved

    # A tampered blob on the relay is refused and nothing is left behind.
    blobs = [
        p
        for p in (relay.settings.data_dir).rglob("*")
        if p.is_file() and p.stat().st_size > len(data)
    ]
    assert blobs
    blob = blobs[0]
    raw = bytearray(blob.read_bytes())
    raw[100] ^= 1
    blob.write_bytes(bytes(raw))
    with pytest.raises(AttachmentError):
        await bob.download(message, tmp_path / "bad.bin")
    assert not (tmp_path / "bad.bin").exists()
    assert not partial_files(tmp_path)


async def test_linked_device_sends_and_receives_for_the_account(
    make_client: Factory, relay: Relay, tmp_path: Path
) -> None:
    alice, bob, ev_a, ev_b = await connected_pair(make_client)
    await alice.send_text("bob", "before linking")
    group = await alice.create_group("with-bob", ["bob"])
    await wait_for(lambda: len(bob.groups()) == 1)
    invitation = await alice.link()
    alice2 = await VoxClient.join(tmp_path / "alice2", relay.base_url, invitation.code)
    try:
        ev_a2 = collect(alice2)
        await alice2.connect()
        assert await alice.wait_linked(invitation, within=10) == invitation.device_id
        assert {d.device_id for d in await alice2.devices()} == {1, invitation.device_id}
        await bob.send_text("alice", "to both alices")
        await wait_for(lambda: texts(ev_a, "bob") == ["to both alices"])
        await wait_for(lambda: texts(ev_a2, "bob") == ["to both alices"])
        await alice2.send_text("bob", "from the new device")
        await wait_for(lambda: "from the new device" in texts(ev_b, "alice"))
        sent_copy = [e for e in ev_a if isinstance(e, Message) and e.outgoing]
        await wait_for(lambda: any(isinstance(e, Message) and e.outgoing for e in ev_a))
        sent_copy = [e for e in ev_a if isinstance(e, Message) and e.outgoing]
        assert sent_copy[0].text == "from the new device" and sent_copy[0].conversation == "bob"
        from_new = next(
            e for e in ev_b if isinstance(e, Message) and e.text == "from the new device"
        )
        assert from_new.device == invitation.device_id
        # The new device learned about the group from the old one and reads bob's messages.
        await wait_for(lambda: [g.group_id for g in alice2.groups()] == [group.group_id])
        await bob.send_group_text(group.group_id, "group hello")
        await wait_for(lambda: "group hello" in texts(ev_a2, "bob"))
        # The code is single-use.
        with pytest.raises(LinkCodeExpired):
            await VoxClient.join(tmp_path / "alice3", relay.base_url, invitation.code)
    finally:
        await alice2.close()


async def test_linking_fails_with_typed_errors_and_waits_on_the_given_clock(
    make_client: Factory, relay: Relay, tmp_path: Path
) -> None:
    alice = await make_client("alice")
    with pytest.raises(LinkCodeMalformed):
        await VoxClient.join(tmp_path / "typo", relay.base_url, "alice:2:ABCD")
    invitation = await alice.link()
    # A mistyped secret derives another temporary key: the relay refuses the login.
    wrong = format_code("alice", invitation.device_id, bytes(10))
    with pytest.raises(LinkCodeExpired, match="expired or already used"):
        await VoxClient.join(tmp_path / "wrong", relay.base_url, wrong)
    assert not (tmp_path / "typo").exists() and not (tmp_path / "wrong").exists()
    # The wait reads the clock it is given: five minutes pass after the first look.
    readings = iter([0.0, 0.0])

    def clock() -> float:
        return next(readings, 301.0)

    with pytest.raises(LinkTimeout, match="did not join in time") as caught:
        await alice.wait_linked(invitation, within=300.0, clock=clock)
    assert caught.value.waited == 300.0


async def test_an_unlinked_device_gets_no_later_group_keys_and_is_locked_out(
    make_client: Factory, relay: Relay, tmp_path: Path
) -> None:
    alice, bob, ev_a, ev_b = await connected_pair(make_client)
    group = await alice.create_group("g", ["bob"])
    gid = bytes.fromhex(group.group_id)
    invitation = await alice.link()
    laptop = await VoxClient.join(tmp_path / "laptop", relay.base_url, invitation.code)
    try:
        ev_l = collect(laptop)
        await laptop.connect()
        await alice.wait_linked(invitation, within=10)
        await wait_for(lambda: len(laptop.groups()) == 1 and len(bob.groups()) == 1)
        await bob.send_group_text(group.group_id, "before")
        await alice.send_group_text(group.group_id, "alice before")
        await wait_for(lambda: texts(ev_l, "bob") == ["before"])
        await wait_for(lambda: texts(ev_b, "alice") == ["alice before"])
        bob_key = bob.protocol.groups.own_key(gid).key_id
        alice_key = alice.protocol.groups.own_key(gid).key_id
        # The laptop is lost: alice removes it from her signed device list.
        await alice.remove_device(invitation.device_id)
        assert [d.device_id for d in await alice.devices()] == [1]
        await bob.send_group_text(group.group_id, "after")  # bob's list is stale: refetched
        await alice.send_group_text(group.group_id, "alice after")
        await wait_for(lambda: texts(ev_a, "bob") == ["before", "after"])
        await wait_for(lambda: texts(ev_b, "alice") == ["alice before", "alice after"])
        # Both members rotated: the laptop never received the new keys.
        new_bob_key = bob.protocol.groups.own_key(gid).key_id
        new_alice_key = alice.protocol.groups.own_key(gid).key_id
        assert new_bob_key != bob_key and new_alice_key != alice_key
        record = laptop.protocol.groups.record(gid, bob.identity.address)
        assert record is not None and new_bob_key not in record.key_ids
        assert texts(ev_l, "bob") == ["before"]
        # The relay dropped the laptop's socket and refuses its login: it stops reconnecting,
        # says so in its event stream, and a send fails at once with a clear error.
        await wait_for(lambda: any(isinstance(e, SignedOut) for e in ev_l))
        started = time.monotonic()
        with pytest.raises(DeviceRemoved, match="removed from the account"):
            await laptop.send_text("bob", "still here?")
        assert time.monotonic() - started < 5
    finally:
        await laptop.close()


async def reregister(client: VoxClient, relay: Relay, home: Path) -> VoxClient:
    """The user lost the device: the operator frees the name, the user registers again with
    a new account key (same username, device id 1)."""
    await client.close()
    async with relay.state.sessions() as session:
        await session.execute(delete(Account).where(Account.username == client.username))
        await session.commit()
    return await VoxClient.register(home, relay.base_url, client.username)


async def test_changed_account_key_blocks_sending_until_accepted(
    make_client: Factory, relay: Relay, tmp_path: Path
) -> None:
    alice, bob = await make_client("alice"), await make_client("bob")
    ev_a = collect(alice)
    alice.engine.device_list_ttl = 0  # refetch before every send (a new process does so once)
    await alice.connect()
    await alice.send_text("bob", "first")
    first = await alice.verify("bob")
    assert not first.key_changed
    # Bob loses his phone; the operator frees the name and bob registers again (new key).
    bob2 = await reregister(bob, relay, tmp_path / "bob-new")
    try:
        with pytest.raises(UntrustedIdentity):
            await alice.send_text("bob", "are you still you?")
        await wait_for(lambda: any(isinstance(e, KeyChanged) for e in ev_a))
        changed = await alice.verify("bob")
        assert changed.key_changed and changed.safety_number != first.safety_number
        with pytest.raises(UntrustedIdentity):
            await alice.send_text("bob", "still blocked")
        accepted = await alice.accept_key("bob")
        assert accepted.verified and not accepted.key_changed
        ev_b2 = collect(bob2)
        await bob2.connect()
        await alice.send_text("bob", "welcome back")
        await wait_for(lambda: texts(ev_b2, "alice") == ["welcome back"])
    finally:
        await bob2.close()


async def test_first_message_from_a_changed_key_is_shown_with_a_warning(
    make_client: Factory, relay: Relay, tmp_path: Path
) -> None:
    alice, bob = await make_client("alice"), await make_client("bob")
    ev_a = collect(alice)
    await alice.connect()
    await bob.send_text("alice", "old phone")
    await wait_for(lambda: texts(ev_a, "bob") == ["old phone"])
    before = await alice.verify("bob")
    # Bob re-registers with a new key and writes first; alice's cached list (fetched
    # moments ago, well within its TTL) still holds bob's old key for the same device id.
    bob2 = await reregister(bob, relay, tmp_path / "bob-new")
    try:
        await bob2.send_text("alice", "new phone, same bob")
        await wait_for(lambda: texts(ev_a, "bob") == ["old phone", "new phone, same bob"])
        changed = [e for e in ev_a if isinstance(e, KeyChanged)]
        assert [e.username for e in changed] == ["bob"]
        after = await alice.verify("bob")
        assert after.key_changed and after.safety_number != before.safety_number
        with pytest.raises(UntrustedIdentity):
            await alice.send_text("bob", "blocked until alice compares numbers")
    finally:
        await bob2.close()


async def test_added_member_reads_later_messages_and_a_leaver_does_not(
    make_client: Factory,
) -> None:
    alice, bob, carol = [await make_client(n) for n in ("alice", "bob", "carol")]
    ev_b, ev_c = collect(bob), collect(carol)
    for c in (alice, bob, carol):
        await c.connect()
    info = await alice.create_group("pair", ["bob"])
    await alice.send_group_text(info.group_id, "just us")
    await wait_for(lambda: texts(ev_b, "alice") == ["just us"])
    added = await alice.add_members(info.group_id, ["carol"])
    assert added.members == ("alice", "bob", "carol") and added.epoch == 2
    await wait_for(lambda: len(carol.groups()) == 1 and len(bob.groups()[0].members) == 3)
    await alice.send_group_text(info.group_id, "welcome carol")
    await wait_for(lambda: texts(ev_c, "alice") == ["welcome carol"])
    await bob.leave_group(info.group_id)
    assert bob.groups() == []
    await wait_for(lambda: alice.groups()[0].members == ("alice", "carol"))
    await wait_for(lambda: carol.groups()[0].members == ("alice", "carol"))
    await carol.send_group_text(info.group_id, "bob is gone")
    await wait_for(lambda: texts(collect_history(alice, info.group_id), "carol") == ["bob is gone"])
    assert texts(ev_b, "carol") == []


def collect_history(client: VoxClient, group_id: str) -> list[Event]:
    """A client's stored messages of a group, as events."""
    return list(client.history(f"group:{group_id}"))
