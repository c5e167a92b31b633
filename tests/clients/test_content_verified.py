"""Verification synced to our own devices (VERIFIED content, docs/protocol-client.md §2):
through the fake relay harness (no sockets, milliseconds) — a linked device that holds the
same key marks the user verified; one that holds none (or an older one) remembers the key and
marks it verified when that key arrives, while any other key is still a change; a VERIFIED
from another account is refused; and once between real clients through a real relay."""

from __future__ import annotations

from pathlib import Path

from clients.sdk import VoxClient, trust
from clients.sdk.content import VerifiedContent, VerifyState
from clients.sdk.models import DecryptFailure
from clients.store.models import TrustState
from tests.clients.conftest import Factory
from tests.clients.content_kit import send
from tests.clients.fake_relay import Device, FakeRelay
from tests.clients.kit import wait_for
from tests.server.relay_harness import Relay


def state(device: Device, username: str) -> TrustState | None:
    peer = device.proto.store.get_peer(username)
    return None if peer is None else peer.trust


def verified_bob(alice: Device) -> VerifiedContent:
    """What alice's device sends its siblings once she accepted bob's key."""
    peer = alice.proto.store.get_peer("bob")
    assert peer is not None
    trust.accept_key(alice.proto.store, "bob")
    return VerifiedContent(username="bob", account_key=peer.account_key, sent_at_ms=1)


def pair_and_bob(*, siblings_know_bob: bool) -> tuple[Device, Device, Device, FakeRelay]:
    relay = FakeRelay()
    alice = Device.register(relay, "alice")
    alice2 = Device.register(relay, "alice", alice.proto.identity.account_key, device_id=2)
    bob = Device.register(relay, "bob")
    for d in (alice, alice2, bob):
        d.refresh("alice")
        if d is not alice2 or siblings_know_bob:
            d.refresh("bob")
    return alice, alice2, bob, relay


def test_a_linked_device_holding_the_same_key_marks_the_user_verified() -> None:
    alice, alice2, _, _ = pair_and_bob(siblings_know_bob=True)
    assert state(alice2, "bob") is TrustState.TOFU
    send(alice, "alice", verified_bob(alice))
    assert [e for e in alice2.receive() if isinstance(e, DecryptFailure)] == []
    assert state(alice2, "bob") is TrustState.VERIFIED


def test_a_device_without_the_key_marks_it_verified_when_exactly_that_key_arrives() -> None:
    alice, alice2, _, relay = pair_and_bob(siblings_know_bob=False)
    send(alice, "alice", verified_bob(alice))
    alice2.receive()
    assert state(alice2, "bob") is None  # nothing to mark yet: remembered
    alice2.refresh("bob")
    assert state(alice2, "bob") is TrustState.VERIFIED
    # bob reinstalls (a new account key, never verified): that is a change as always
    Device.register(relay, "bob")
    alice2.refresh("bob")
    assert state(alice2, "bob") is TrustState.CHANGED


def test_a_key_verified_elsewhere_replaces_a_changed_key_without_a_warning() -> None:
    alice, alice2, _, relay = pair_and_bob(siblings_know_bob=True)
    Device.register(relay, "bob")  # bob's new key; alice compares and accepts it first
    alice.refresh("bob")
    assert state(alice, "bob") is TrustState.CHANGED
    send(alice, "alice", verified_bob(alice))
    alice2.receive()
    assert state(alice2, "bob") is TrustState.TOFU  # still the old key here: remembered
    assert not alice2.proto.accept_device_list_changed(
        "bob", relay.account_keys["bob"], relay.device_lists["bob"]
    )[1]  # no "key changed" for a key we verified on another device
    assert state(alice2, "bob") is TrustState.VERIFIED


def test_an_unverified_sync_takes_back_exactly_that_key_and_a_remembered_one() -> None:
    alice, alice2, _, relay = pair_and_bob(siblings_know_bob=True)
    key = relay.account_keys["bob"]
    send(alice, "alice", verified_bob(alice))
    alice2.receive()
    assert state(alice2, "bob") is TrustState.VERIFIED
    trust.clear_verified(alice.proto.store, "bob")
    assert state(alice, "bob") is TrustState.TOFU
    unverified = VerifiedContent(
        username="bob", account_key=key, state=VerifyState.UNVERIFIED, sent_at_ms=2
    )
    send(alice, "alice", unverified)
    assert [e for e in alice2.receive() if isinstance(e, DecryptFailure)] == []
    assert state(alice2, "bob") is TrustState.TOFU
    # An unverify of another key leaves this one alone ...
    send(alice, "alice", verified_bob(alice))
    alice2.receive()
    other = VerifiedContent(username="bob", account_key=b"\x02" + bytes(range(32)),
                            state=VerifyState.UNVERIFIED, sent_at_ms=3)  # fmt: skip
    send(alice, "alice", other)
    alice2.receive()
    assert state(alice2, "bob") is TrustState.VERIFIED
    # ... and one of a key only remembered (not held yet) forgets it.
    _, sibling, _, _ = pair_and_bob(siblings_know_bob=False)
    sibling.proto.store.set_setting("verified_sync:bob", key.hex())
    assert trust.apply_verified(sibling.proto.store, "bob", key, verified=False) is False
    assert sibling.proto.store.get_setting("verified_sync:bob") is None


def test_a_verified_sync_from_another_account_is_refused() -> None:
    alice, _, bob, relay = pair_and_bob(siblings_know_bob=True)
    carol = Device.register(relay, "carol")
    for d in (alice, bob, carol):
        d.refresh("carol")
    bob.refresh("carol")
    # bob claims "alice verified carol": only alice's own devices may say that
    key = relay.account_keys["carol"]
    send(bob, "alice", VerifiedContent(username="carol", account_key=key, sent_at_ms=1))
    failures = [e for e in alice.receive() if isinstance(e, DecryptFailure)]
    assert [f.sender for f in failures] == ["bob"]
    assert state(alice, "carol") is TrustState.TOFU
    assert alice.proto.store.get_setting("verified_sync:carol") is None


async def test_verify_accept_reaches_a_linked_device_through_a_real_relay(
    make_client: Factory, relay: Relay, tmp_path: Path
) -> None:
    alice, bob = await make_client("alice"), await make_client("bob")
    for c in (alice, bob):
        await c.connect()
    invitation = await alice.link()
    alice2 = await VoxClient.join(tmp_path / "alice2", relay.base_url, invitation.code)
    try:
        await alice2.connect()
        assert await alice.wait_linked(invitation, within=20) == invitation.device_id
        await alice2.send_text("bob", "hi from the laptop")  # alice2 knows bob's key (TOFU)
        assert not (await alice2.verify("bob")).verified
        assert (await alice.accept_key("bob")).verified
        await wait_for(lambda: alice2.store.get_peer("bob").trust is TrustState.VERIFIED)  # type: ignore[union-attr]
        assert (await alice2.verify("bob")).verified
        assert (await alice2.verify("bob")).safety_number == (
            await alice.verify("bob")
        ).safety_number
    finally:
        await alice2.close()
