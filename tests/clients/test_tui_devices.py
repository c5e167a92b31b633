"""The sender's device number is shown only when it helps (issue 11): a message from our own
other device, or a user writing from several devices in the conversation — otherwise just
the name. Linked devices are real (``vox link`` / ``join``) through a real relay."""

from __future__ import annotations

from pathlib import Path

from clients.sdk import VoxClient
from clients.tui import ChatApp, SdkBackend
from tests.clients import test_tui as base
from tests.clients.test_tui import People, shown, type_line, until
from tests.server.relay_harness import Relay

relay = base.relay  # the fixtures, used by name
people = base.people


async def linked(client: VoxClient, relay: Relay, home: Path) -> VoxClient:
    """A second device of ``client``'s account, connected."""
    invitation = await client.link()
    device = await VoxClient.join(home, relay.base_url, invitation.code)
    await device.connect()
    await client.wait_linked(invitation, within=30)
    return device


async def test_device_numbers_show_only_for_our_other_devices_and_multi_device_senders(
    people: People, relay: Relay, tmp_path: Path
) -> None:
    laptop = await linked(people.alice, relay, tmp_path / "alice-laptop")
    bob_laptop = await linked(people.bob, relay, tmp_path / "bob-laptop")
    try:
        await people.bob.send_text("alice", "from bob's phone")
        app = ChatApp(SdkBackend(people.alice), open_conversation="bob")
        async with app.run_test(size=(120, 30)) as pilot:
            # One device of bob's in this conversation so far: just his name.
            await until(pilot, lambda: shown(app, " bob: from bob's phone"))
            await type_line(pilot, "from alice's desk")
            await until(pilot, lambda: shown(app, " you: from alice's desk"))
            # Our other device: which one.
            await laptop.send_text("bob", "from alice's laptop")
            await until(pilot, lambda: shown(app, f" you·{laptop.device_id}: from alice's laptop"))
            # Bob writes from a second device: both of his rows name theirs from now on.
            await bob_laptop.send_text("alice", "from bob's laptop")
            first, second = people.bob.device_id, bob_laptop.device_id
            await until(pilot, lambda: shown(app, f" bob·{second}: from bob's laptop"))
            await until(pilot, lambda: shown(app, f" bob·{first}: from bob's phone"))
            assert shown(app, " you: from alice's desk")  # this device: never a number
            # Opened again: both devices in the loaded history, every row says which.
            await app.open_conversation("bob")
            await until(pilot, lambda: shown(app, f" bob·{first}: from bob's phone"))
            assert shown(app, f" bob·{second}: from bob's laptop")
    finally:
        await laptop.close()
        await bob_laptop.close()
