"""Group trust through a real relay: a member's newly linked device gets the sender key (one
rule with the relay: every device of every user a send names), and a device removed from its
account's signed list is no longer believed as a group sender."""

from __future__ import annotations

import os
from pathlib import Path

from clients.sdk import DecryptFailure, Event, VoxClient
from clients.sdk.content import PayloadKind, RelayPayload, TextContent, padded
from tests.clients.conftest import Factory
from tests.clients.kit import texts, wait_for
from tests.server.relay_harness import Relay, TestAccount
from tests.server.ws_kit import Peer, open_ws


def collect(client: VoxClient) -> list[Event]:
    events: list[Event] = []
    client.on_event(events.append)
    return events


async def test_after_a_member_links_a_device_the_next_group_send_reaches_every_device(
    make_client: Factory, relay: Relay, tmp_path: Path
) -> None:
    alice, bob, carol = [await make_client(n) for n in ("alice", "bob", "carol")]
    ev_b, ev_c = collect(bob), collect(carol)
    for c in (alice, bob, carol):
        await c.connect()
    group = await alice.create_group("trio", ["bob", "carol"])
    await wait_for(lambda: len(bob.groups()) == 1 and len(carol.groups()) == 1)
    await alice.send_group_text(group.group_id, "before bob links")  # bob:1 holds alice's key
    await wait_for(lambda: texts(ev_b, "alice") == ["before bob links"])

    invitation = await bob.link()
    bob2 = await VoxClient.join(tmp_path / "bob2", relay.base_url, invitation.code)
    try:
        ev_b2 = collect(bob2)
        await bob2.connect()
        await bob.wait_linked(invitation, within=30)
        await wait_for(lambda: [g.group_id for g in bob2.groups()] == [group.group_id])
        # Before the fix: "relay refused the request (409 mismatch): device lists kept
        # changing" — the distribution named bob but addressed only his new device.
        result = await alice.send_group_text(group.group_id, "after bob links")
        assert result is not None
        await wait_for(lambda: texts(ev_b2, "alice") == ["after bob links"])
        await wait_for(lambda: texts(ev_b, "alice") == ["before bob links", "after bob links"])
        await wait_for(lambda: texts(ev_c, "alice") == ["before bob links", "after bob links"])
        assert not [e for e in ev_b2 + ev_b + ev_c if isinstance(e, DecryptFailure)]
    finally:
        await bob2.close()


async def inject(relay: Relay, payload: bytes, to: list[tuple[str, int]]) -> None:
    """Someone outside the group (here an ordinary account, mallory) hands the relay a payload
    for ``to``: the relay's ``from`` is mallory, the sender a receiver believes is the one
    signed inside the payload."""
    async with relay.client() as http:
        mallory = TestAccount.new("mallory")
        token = await mallory.register_and_login(http)
    async with open_ws(relay, Peer("mallory", 1, token)) as ws:
        await ws.send_message(os.urandom(16).hex(), [(payload, [Peer(u, d, "") for u, d in to])])
        await ws.expect("accepted", wait=20)


async def test_a_device_removed_from_its_account_is_no_longer_believed_as_a_group_sender(
    make_client: Factory, relay: Relay, tmp_path: Path
) -> None:
    alice, bob, carol = [await make_client(n) for n in ("alice", "bob", "carol")]
    ev_a = collect(alice)
    for c in (alice, bob, carol):
        await c.connect()
    group = await alice.create_group("trio", ["bob", "carol"])
    gid = bytes.fromhex(group.group_id)
    await wait_for(lambda: len(bob.groups()) == 1 and len(carol.groups()) == 1)
    invitation = await bob.link()
    laptop = await VoxClient.join(tmp_path / "laptop", relay.base_url, invitation.code)
    try:
        await laptop.connect()
        await bob.wait_linked(invitation, within=30)
        await wait_for(lambda: [g.group_id for g in laptop.groups()] == [group.group_id])
        await laptop.send_group_text(group.group_id, "from the laptop")
        await wait_for(lambda: texts(ev_a, "bob") == ["from the laptop"])
        laptop_id = invitation.device_id
        assert alice.store.load_sender_key(group.group_id, "bob", laptop_id) is not None
        # The laptop is lost; whoever has it keeps its sending state. Bob revokes the device.
        stolen = laptop.protocol.groups.own_key(gid)
    finally:
        await laptop.close()
    await bob.remove_device(laptop_id)
    await alice.verify("bob")  # alice sees bob's new list (the laptop is gone)
    assert alice.store.load_sender_key(group.group_id, "bob", laptop_id) is None

    forged = TextContent(group_id=gid, text="forged by the thief", sent_at_ms=1)
    message = stolen.encrypt(padded(forged))
    await inject(
        relay, RelayPayload(PayloadKind.GROUP, message.to_bytes()).to_bytes(), [("alice", 1)]
    )
    await wait_for(lambda: any(isinstance(e, DecryptFailure) for e in ev_a))
    failure = next(e for e in ev_a if isinstance(e, DecryptFailure))
    assert failure.error == "UnknownDevice"
    assert texts(ev_a, "bob") == ["from the laptop"]
