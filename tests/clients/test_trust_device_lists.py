"""Device-list trust against a relay that lies: no rollback through an account-key flip.

The rollback floor is kept for every account key a list was ever accepted under, so a relay
that serves an attacker's key once and then the genuine key with an old list (one that still
names a revoked device) gets the old list refused, through the SDK, over a real relay.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clients.sdk import BadDeviceList, Event, KeyChanged, VoxClient, trust
from clients.sdk.identity import first_device_list, new_identity
from clients.store.memory import MemoryStore
from clients.store.models import TrustState
from crypto.device_list import DeviceEntry, DeviceList
from crypto.keys import AccountKey, DeviceAuthKey, DeviceIdentityKey
from tests.clients.kit import texts, wait_for
from tests.clients.malicious_relay import Forgeries, malicious_relay
from tests.server.relay_harness import Relay


@pytest.fixture
def forgeries() -> Forgeries:
    return Forgeries()


@pytest.fixture
async def evil_relay(tmp_path: Path, forgeries: Forgeries) -> AsyncIterator[Relay]:
    async with malicious_relay(tmp_path, forgeries) as relay:
        yield relay


def stolen_device(device_id: int) -> DeviceEntry:
    """A device entry whose private keys the attacker holds (a laptop that was later lost)."""
    return DeviceEntry(
        device_id, DeviceIdentityKey.generate().public_key, DeviceAuthKey.generate().public_key
    )


async def test_a_flip_to_another_key_and_back_cannot_roll_back_the_device_list(
    evil_relay: Relay, forgeries: Forgeries, tmp_path: Path
) -> None:
    alice = await VoxClient.register(tmp_path / "alice", evil_relay.base_url, "alice")
    bob = await VoxClient.register(tmp_path / "bob", evil_relay.base_url, "bob")
    try:
        events: list[Event] = []
        alice.on_event(events.append)
        ev_b: list[Event] = []
        bob.on_event(ev_b.append)
        await bob.connect()
        # Bob's genuine history: v2 adds a laptop, v3 revokes it (it was lost).
        v1 = bob.protocol.device_list("bob")
        assert v1 is not None and v1.version == 1
        v2 = v1.add_device(stolen_device(2)).sign(bob.identity.account_key)
        await bob.http.put_devices("bob", v2.to_bytes())
        await bob.remove_device(2)
        genuine = await alice.verify("bob")
        listed = alice.protocol.device_list("bob")
        assert listed is not None and listed.version == 3 and listed.device_ids == (1,)

        # The relay serves an attacker's key once: a key change, reported.
        k2 = AccountKey.generate()
        attacker = DeviceList.first("bob", stolen_device(1)).sign(k2)
        forgeries.serve(
            "bob", account_key=k2.public_key.to_bytes(), device_list=attacker.to_bytes()
        )
        assert (await alice.verify("bob")).key_changed
        assert any(isinstance(e, KeyChanged) for e in events)

        # Then the genuine key with the old v2 that still names the revoked laptop: refused.
        k1 = bob.identity.account_key.public_key.to_bytes()
        forgeries.serve("bob", account_key=k1, device_list=v2.to_bytes())
        with pytest.raises(BadDeviceList, match="not newer than 3"):
            await alice.verify("bob")
        assert forgeries.served == 2
        believed = alice.protocol.device_list("bob")
        assert believed is not None and 2 not in believed.device_ids

        # The genuine key with its current list: a key change like any other (the user has to
        # accept it again), and after accepting only the genuine device is a recipient.
        back = await alice.verify("bob")
        assert back.key_changed and back.safety_number == genuine.safety_number
        accepted = await alice.accept_key("bob")
        assert accepted.verified and not accepted.key_changed
        assert alice.protocol.recipient_devices("bob") == [("bob", 1)]
        await alice.send_text("bob", "only to the phone")
        await wait_for(lambda: texts(ev_b, "alice") == ["only to the phone"])
    finally:
        await alice.close()
        await bob.close()


# --- the rule itself, on the store ---------------------------------------------------------


def bob_lists() -> tuple[AccountKey, list[bytes]]:
    """Bob's account key and his lists v1..v3 (v2 names a second device)."""
    bob = new_identity("bob", 1, None)
    v1 = first_device_list(bob)
    v2 = v1.device_list.add_device(stolen_device(2)).sign(bob.account_key)
    v3 = v2.device_list.remove_device(2).sign(bob.account_key)
    return bob.account_key, [v1.to_bytes(), v2.to_bytes(), v3.to_bytes()]


def test_an_equal_version_with_other_bytes_under_a_former_key_is_refused() -> None:
    store = MemoryStore()
    k1, lists = bob_lists()
    key1 = k1.public_key.to_bytes()
    trust.accept_device_list(store, "bob", key1, lists[1])
    k2 = AccountKey.generate()
    other = DeviceList.first("bob", stolen_device(1)).sign(k2)
    _, changed = trust.accept_device_list(store, "bob", k2.public_key.to_bytes(), other.to_bytes())
    assert changed
    forked = DeviceList("bob", 2, (stolen_device(1), stolen_device(7))).sign(k1).to_bytes()
    with pytest.raises(BadDeviceList):
        trust.accept_device_list(store, "bob", key1, forked)
    with pytest.raises(BadDeviceList):
        trust.accept_device_list(store, "bob", key1, lists[0])
    _, changed = trust.accept_device_list(store, "bob", key1, lists[1])  # the same v2 again
    assert changed
    peer = store.get_peer("bob")
    assert peer is not None and peer.trust is TrustState.CHANGED and peer.account_key == key1


def test_floors_of_keys_the_user_never_trusted_are_bounded_but_trusted_ones_are_kept() -> None:
    store = MemoryStore()
    k1, lists = bob_lists()
    key1 = k1.public_key.to_bytes()
    trust.accept_device_list(store, "bob", key1, lists[2])  # first use: trusted
    for _ in range(trust.MAX_UNTRUSTED_FLOORS + 10):
        k = AccountKey.generate()
        forged = DeviceList.first("bob", stolen_device(1)).sign(k)
        trust.accept_device_list(store, "bob", k.public_key.to_bytes(), forged.to_bytes())
    raw = store.get_setting("trust_floors:bob")
    assert raw is not None and len(json.loads(raw)) == trust.MAX_UNTRUSTED_FLOORS + 1
    with pytest.raises(BadDeviceList):  # the trusted key's floor survived the flood
        trust.accept_device_list(store, "bob", key1, lists[1])


def test_a_store_written_before_floors_uses_the_list_it_holds() -> None:
    store = MemoryStore()
    k1, lists = bob_lists()
    key1 = k1.public_key.to_bytes()
    trust.accept_device_list(store, "bob", key1, lists[2])
    store.set_setting("trust_floors:bob", None)  # as an older SDK left it
    k2 = AccountKey.generate()
    other = DeviceList.first("bob", stolen_device(1)).sign(k2)
    trust.accept_device_list(store, "bob", k2.public_key.to_bytes(), other.to_bytes())
    with pytest.raises(BadDeviceList):
        trust.accept_device_list(store, "bob", key1, lists[1])
