"""The sans-I/O ClientProtocol without a relay: two devices over an in-memory link that can
drop, reorder, duplicate and flip bits (h11's ConnectionPair idea)."""

from __future__ import annotations

import base64
import itertools
from dataclasses import dataclass

import pytest

from clients.sdk import identity as ids
from clients.sdk import trust
from clients.sdk.content import GroupAction, TextContent
from clients.sdk.groups import new_group_id
from clients.sdk.models import DecryptFailure, Message
from clients.sdk.protocol import (
    ClientProtocol,
    DeviceBundle,
    Envelope,
    NeedDeviceList,
    OutgoingSend,
)
from clients.store.base import Store
from clients.store.memory import MemoryStore
from crypto.sender_keys import SenderKeyState

_ids = itertools.count(1)


@dataclass
class Party:
    """One registered device: its protocol, public registration material."""

    proto: ClientProtocol
    account_key: bytes
    device_list: bytes
    upload: dict[str, object]

    @classmethod
    def new(cls, username: str, store: Store | None = None) -> Party:
        store = MemoryStore() if store is None else store
        me = ids.new_identity(username, 1, None)
        signed = ids.first_device_list(me)
        upload = ids.registration_prekeys(store, me, batch=3)
        store.save_profile(me.to_profile("http://relay.invalid"))
        key = me.account_key.public_key.to_bytes()
        trust.accept_device_list(store, username, key, signed.to_bytes())
        return cls(ClientProtocol(store, me), key, signed.to_bytes(), upload)

    def bundle(self) -> DeviceBundle:
        def signed(x: object) -> tuple[int, bytes, bytes]:
            assert isinstance(x, dict)
            return x["key_id"], base64.b64decode(x["public_key"]), base64.b64decode(x["signature"])

        up = self.upload
        otk = up["one_time_prekeys"][0]  # type: ignore[index]
        return DeviceBundle(
            device_id=1,
            identity_key=self.proto.identity.identity_key.public_key.to_bytes(),
            signed_prekey=signed(up["signed_prekey"]),
            last_resort_prekey=signed(up["last_resort_prekey"]),
            one_time_prekey=(otk["key_id"], base64.b64decode(otk["public_key"])),
            one_time_pq_prekey=signed(up["one_time_pq_prekeys"][0]),  # type: ignore[index]
        )

    def knows(self, other: Party) -> None:
        """What the relay would serve: the other's key and list (TOFU)."""
        self.proto.accept_device_list(other.proto.username, other.account_key, other.device_list)


def pair(stores: tuple[Store, Store] | None = None) -> tuple[Party, Party]:
    """alice and bob (on ``stores``, else in memory); alice holds a session with bob."""
    alice_store, bob_store = (None, None) if stores is None else stores
    alice, bob = Party.new("alice", alice_store), Party.new("bob", bob_store)
    alice.knows(bob)
    alice.proto.accept_bundle("bob", bob.account_key, bob.bundle())
    return alice, bob


def envelopes(sender: Party, to: str, *texts: str) -> list[Envelope]:
    out = []
    for text in texts:
        send = sender.proto.encode_direct(to, TextContent(text=text, sent_at_ms=1))
        ((data, recipients),) = send.payloads
        assert recipients == [(to, 1)]
        out.append(Envelope(next(_ids), f"env{next(_ids)}", sender.proto.username, 1, 0, data))
    return out


def messages(party: Party, envs: list[Envelope]) -> list[str | DecryptFailure]:
    out: list[str | DecryptFailure] = []
    for env in envs:
        need = party.proto.precheck(env)
        if isinstance(need, NeedDeviceList):
            pytest.fail(f"unexpected device list request for {need.username}")
        for event in party.proto.receive(env).events:
            if isinstance(event, Message):
                out.append(event.text or "")
            elif isinstance(event, DecryptFailure):
                out.append(event)
    return out


def test_first_message_asks_for_the_senders_device_list_then_decrypts() -> None:
    alice, bob = pair()
    (env,) = envelopes(alice, "bob", "hi")
    assert bob.proto.precheck(env) == NeedDeviceList("alice")
    bob.knows(alice)
    assert messages(bob, [env]) == ["hi"]
    assert messages(bob, [env]) == []  # the same envelope again: already processed
    reply = envelopes(bob, "alice", "hello")  # bob answers over the session alice started
    alice.knows(bob)
    assert messages(alice, reply) == ["hello"]


def test_reordered_and_duplicated_messages_arrive_once() -> None:
    alice, bob = pair()
    bob.knows(alice)
    envs = envelopes(alice, "bob", *(f"m{i}" for i in range(6)))
    shuffled = [envs[0], envs[3], envs[1], envs[5], envs[2], envs[4]]
    replays = [Envelope(e.seq + 1000, e.envelope_id + "x", "alice", 1, 0, e.data) for e in envs[:3]]
    got = messages(bob, shuffled + replays)
    assert [g for g in got if isinstance(g, str)] == ["m0", "m3", "m1", "m5", "m2", "m4"]
    # A replayed ciphertext under a new envelope id is refused by the ratchet, not shown twice.
    failures = [g for g in got if isinstance(g, DecryptFailure)]
    assert len(failures) == 3 and {f.error for f in failures} == {"DuplicateMessage"}
    assert len(bob.proto.store.history("alice")) == 6


def test_a_flipped_bit_is_reported_and_changes_no_state() -> None:
    alice, bob = pair()
    bob.knows(alice)
    first, second = envelopes(alice, "bob", "one", "two")
    for position in (5, len(first.data) // 2, len(first.data) - 1):
        data = bytearray(first.data)
        data[position] ^= 0x01
        tampered = Envelope(first.seq, f"t{position}", "alice", 1, 0, bytes(data))
        (failure,) = messages(bob, [tampered])
        assert isinstance(failure, DecryptFailure) and failure.sender == "alice"
    assert messages(bob, [first, second]) == ["one", "two"]


def test_a_device_missing_from_the_signed_list_is_refused() -> None:
    alice, bob = pair()
    mallory = Party.new("mallory")
    # The relay claims mallory's device is alice's: the ciphertext names mallory, and the
    # list bob verified for alice does not contain mallory's identity key.
    mallory.knows(bob)
    mallory.proto.accept_bundle("bob", bob.account_key, bob.bundle())
    (env,) = envelopes(mallory, "bob", "trust me")
    forged = Envelope(env.seq, env.envelope_id, "alice", 1, 0, env.data)
    bob.knows(alice)
    # Keys the verified list does not hold for alice:1: bob's client refetches the list
    # (the relay serves the same one) and then refuses the message.
    assert bob.proto.precheck(forged) == NeedDeviceList("alice")
    (failure,) = bob.proto.receive(forged).events
    assert isinstance(failure, DecryptFailure)
    assert bob.proto.store.history("alice") == []


def group_envelopes(sender: Party, sends: list[OutgoingSend], to: str) -> list[Envelope]:
    """The envelopes of ``sends`` that the relay would queue for ``to``'s device 1."""
    out = []
    for send in sends:
        for data, recipients in send.payloads:
            if (to, 1) in recipients:
                env_id = f"env{next(_ids)}"
                out.append(Envelope(next(_ids), env_id, sender.proto.username, 1, 0, data))
    return out


def group_pair() -> tuple[Party, Party, bytes]:
    """Alice and bob, each knowing the other, in a group alice created (bob applied it)."""
    alice, bob = pair()
    bob.knows(alice)
    group_id = new_group_id()
    create = alice.proto.group_update(group_id, "g", ("alice", "bob"), GroupAction.CREATE)
    setup = group_envelopes(alice, [alice.proto.encode_direct("bob", create)], "bob")
    assert messages(bob, setup) == []
    return alice, bob, group_id


def group_sends(sender: Party, group_id: bytes, text: str) -> list[OutgoingSend]:
    """What ``sender`` sends for a group text: a distribution if still needed, the message."""
    content = TextContent(text=text, group_id=group_id, sent_at_ms=1)
    return sender.proto.encode_group(group_id, content)


def test_a_late_group_message_under_a_replaced_sender_key_still_decrypts() -> None:
    alice, bob, group_id = group_pair()
    first_key = alice.proto.groups.own_key(group_id).key_id
    old = group_envelopes(alice, group_sends(alice, group_id, "old"), "bob")
    alice.proto.groups.rotate(group_id)  # e.g. a member was removed meanwhile
    new = group_envelopes(alice, group_sends(alice, group_id, "new"), "bob")
    assert alice.proto.groups.own_key(group_id).key_id != first_key
    *distributions, newest = new
    # The old key's distribution and the new one arrive first, the old message last.
    assert messages(bob, [old[0], *distributions, newest, old[1]]) == ["new", "old"]
    record = bob.proto.groups.record(group_id, alice.proto.identity.address)
    assert record is not None and len(record.key_ids) == 2
    # A replay of the late message is a duplicate, not a second copy in the history.
    replay = Envelope(next(_ids), "replay", "alice", 1, 0, old[1].data)
    (failure,) = messages(bob, [replay])
    assert isinstance(failure, DecryptFailure) and failure.error == "DuplicateMessage"


def test_an_unknown_sender_key_is_reported_without_jamming() -> None:
    alice, bob, group_id = group_pair()
    distribution, message = group_envelopes(alice, group_sends(alice, group_id, "lost"), "bob")
    (failure,) = messages(bob, [message])  # the distribution was lost
    assert isinstance(failure, DecryptFailure) and failure.error == "UnknownSenderKey"
    assert messages(bob, [distribution]) == []
    assert messages(bob, group_envelopes(alice, group_sends(alice, group_id, "ok"), "bob")) == [
        "ok"
    ]


def test_a_store_written_with_one_bare_state_per_sender_still_loads() -> None:
    alice, bob = pair()
    group_id = new_group_id()
    alice.proto.group_update(group_id, "g", ("alice", "bob"), GroupAction.CREATE)
    distribution = alice.proto.groups.own_key(group_id).distribution()
    bare = SenderKeyState.from_distribution(distribution)
    address = alice.proto.identity.address
    bob.proto.store.store_sender_key(group_id.hex(), "alice", 1, bare.to_bytes())
    record = bob.proto.groups.record(group_id, address)
    assert record is not None and record.key_ids == (distribution.key_id,)
    message = alice.proto.groups.own_key(group_id).encrypt(b"still readable")
    assert record.decrypt(message) == b"still readable"


def test_a_sender_key_counts_as_distributed_only_once_the_relay_accepted_it() -> None:
    alice, bob, group_id = group_pair()
    first = group_sends(alice, group_id, "one")
    assert len(first) == 2 and first[0].accepted is not None  # distribution, then message
    # The connection dropped before the relay answered: the retry distributes again.
    retry = group_sends(alice, group_id, "one")
    assert len(retry) == 2 and retry[0].accepted is not None
    retry[0].accepted()
    later = group_sends(alice, group_id, "two")
    assert len(later) == 1 and later[0].accepted is None
    # Bob, given only the retried distribution, reads the retried and the later message.
    assert messages(bob, group_envelopes(alice, retry + later, "bob")) == ["one", "two"]


def test_ciphertexts_reveal_lengths_only_to_within_a_pad_block() -> None:
    alice, bob, group_id = group_pair()
    short, longer, long = envelopes(alice, "bob", "ok", "x" * 100, "x" * 300)
    assert len(short.data) == len(longer.data) < len(long.data)
    envs = [
        group_envelopes(alice, group_sends(alice, group_id, t), "bob")[-1] for t in ("k", "x" * 100)
    ]
    assert len(envs[0].data) == len(envs[1].data)
    assert messages(bob, [short, longer, long]) == ["ok", "x" * 100, "x" * 300]


def test_a_leave_from_a_stale_view_still_removes_the_leaver() -> None:
    alice, bob, group_id = group_pair()
    alice.knows(bob)
    # Alice renames the group (epoch 2) while bob, still at epoch 1, leaves (also epoch 2).
    alice.proto.group_update(group_id, "renamed", ("alice", "bob"), GroupAction.ADD)
    leave = bob.proto.group_update(group_id, "g", ("alice",), GroupAction.LEAVE)
    assert bob.proto.groups.get(group_id) is None  # bob forgot the group
    bob.proto.accept_bundle("alice", alice.account_key, alice.bundle())
    envs = group_envelopes(bob, [bob.proto.encode_direct("alice", leave)], "alice")
    assert messages(alice, envs) == []
    group = alice.proto.groups.get(group_id)
    assert group is not None and group.members == ("alice",) and group.name == "renamed"
    assert alice.proto.groups.epoch(group_id) == 2


def test_a_removal_raced_by_a_concurrent_add_still_removes() -> None:
    alice, bob = pair()
    bob.knows(alice)
    group_id = new_group_id()
    create = alice.proto.group_update(group_id, "g", ("alice", "bob", "carol"), GroupAction.CREATE)
    assert (
        messages(bob, group_envelopes(alice, [alice.proto.encode_direct("bob", create)], "bob"))
        == []
    )
    bob_key = bob.proto.groups.own_key(group_id).key_id
    # At epoch 1 both act at once: alice removes carol, bob adds dave (both now at epoch 2).
    remove = alice.proto.group_update(group_id, "g", ("alice", "bob"), GroupAction.REMOVE)
    add = bob.proto.group_update(group_id, "g", ("alice", "bob", "carol", "dave"), GroupAction.ADD)
    # Bob gets alice's removal at a stale epoch: carol goes (she was a member before epoch 2),
    # dave stays (added at epoch 2, unknown to alice), and bob rotates his sender key.
    assert (
        messages(bob, group_envelopes(alice, [alice.proto.encode_direct("bob", remove)], "bob"))
        == []
    )
    group = bob.proto.groups.get(group_id)
    assert group is not None and group.members == ("alice", "bob", "dave")
    assert bob.proto.groups.own_key(group_id).key_id != bob_key
    # Alice gets bob's add at a stale epoch: an add is not forced through (dave can be re-added).
    alice.knows(bob)
    bob.proto.accept_bundle("alice", alice.account_key, alice.bundle())
    assert (
        messages(alice, group_envelopes(bob, [bob.proto.encode_direct("alice", add)], "alice"))
        == []
    )
    group = alice.proto.groups.get(group_id)
    assert group is not None and group.members == ("alice", "bob")
