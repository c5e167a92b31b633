"""Group trust through a real relay: a member's newly linked device gets the sender key (one
rule with the relay: every device of every user a send names), and a device removed from its
account's signed list is no longer believed as a group sender."""

from __future__ import annotations

from pathlib import Path

from clients.sdk import DecryptFailure, Event, VoxClient
from tests.clients.conftest import Factory
from tests.clients.kit import texts, wait_for
from tests.server.relay_harness import Relay


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
