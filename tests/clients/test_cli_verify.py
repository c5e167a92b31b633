"""``vox verify USER --accept`` on one device reaches the account's other devices (a VERIFIED
content): real ``vox`` processes against a real relay, the linked device made with the SDK."""

from __future__ import annotations

from pathlib import Path

import pytest

from clients.sdk import VoxClient
from tests.clients.kit import vox
from tests.server.relay_harness import Relay

pytestmark = pytest.mark.timeout(600)  # real processes on a loaded machine


async def ok(home: Path, *args: str) -> str:
    code, out, err = await vox(home, *args)
    assert code == 0, err
    return out


async def test_verify_accept_on_one_device_marks_the_peer_verified_on_the_other(
    relay: Relay, tmp_path: Path
) -> None:
    a, a2, b = tmp_path / "alice", tmp_path / "alice2", tmp_path / "bob"
    await (await VoxClient.register(b, relay.base_url, "bob")).close()
    alice = await VoxClient.register(a, relay.base_url, "alice")
    try:
        await alice.connect()
        invitation = await alice.link()
        alice2 = await VoxClient.join(a2, relay.base_url, invitation.code)
        await alice2.connect()
        assert await alice.wait_linked(invitation, within=30) == invitation.device_id
        await alice2.close()
    finally:
        await alice.close()
    assert (await ok(a2, "verify", "bob")).endswith("status: trusted on first use\n")
    assert (await ok(a, "verify", "bob", "--accept")).endswith("status: verified\n")
    await ok(a2, "receive", "--wait", "1")
    shown = await ok(a2, "verify", "bob")
    assert shown.endswith("status: verified\n"), shown
    # bob's side is untouched: verification is each account's own business
    assert (await ok(b, "verify", "alice")).endswith("status: trusted on first use\n")
