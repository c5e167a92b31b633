"""The group state machine (``clients/sdk/groupstate.py``) without a relay or a store: values in,
decisions out, in microseconds; then with the protocol and the engine over the fake relay
(``fake_relay.py``), in milliseconds. The same paths run through real relays in
``test_sdk_groups_files_devices.py`` and ``test_trust_groups.py``."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from clients.sdk import groupstate as gs
from clients.sdk.content import GroupAction, GroupUpdate, TextContent
from clients.sdk.errors import GroupError
from clients.sdk.groups import GroupBook
from clients.sdk.models import Message
from clients.sdk.protocol import OutgoingSend
from clients.sdk.sendqueue import Finished
from clients.store.memory import MemoryStore
from crypto.device_list import DeviceList
from crypto.keys import DeviceAddress
from tests.clients.fake_relay import Device, FakeRelay

GID = bytes(range(16))


def state(*members: str, epoch: int = 1, since: dict[str, int] | None = None) -> gs.GroupState:
    return gs.GroupState(GID, "g", tuple(sorted(members)), epoch, since or {})


def update(action: GroupAction, *members: str, epoch: int) -> GroupUpdate:
    return GroupUpdate(
        group_id=GID, epoch=epoch, name="g", action=action, members=members, sent_at_ms=1
    )


# --- local changes ---------------------------------------------------------------------------


def test_create_adds_us_at_epoch_one_and_tells_the_others() -> None:
    t = gs.create("alice", GID, "g", ["carol", "bob"])
    assert t.members == ("alice", "bob", "carol") and t.epoch == 1
    assert t.recipients == {"bob", "carol"} and not t.rotate and not t.removed
    assert t.state == gs.GroupState(GID, "g", t.members, 1, {"alice": 0, "bob": 0, "carol": 0})
    announced = t.update(5)
    assert (announced.epoch, announced.action, announced.members) == (1, GroupAction.CREATE,
                                                                      t.members)  # fmt: skip
    assert announced.sent_at_ms == 5 and announced.group_id == GID


def test_a_group_of_one_is_announced_to_our_own_devices() -> None:
    assert gs.create("alice", GID, "solo", []).recipients == {"alice"}


def test_add_records_when_each_member_was_added() -> None:
    t = gs.add("alice", state("alice", "bob", epoch=3, since={"alice": 0, "bob": 2}), ["dave"])
    assert t.epoch == 4 and t.action is GroupAction.ADD and not t.rotate
    assert t.state is not None and t.state.since == {"alice": 0, "bob": 2, "dave": 4}
    assert t.recipients == {"bob", "dave"}


def test_remove_tells_the_removed_and_rotates_our_key() -> None:
    t = gs.remove("alice", state("alice", "bob", "carol"), ["carol", "nobody"])
    assert t.members == ("alice", "bob") and t.epoch == 2
    assert t.removed == {"carol"} and t.rotate
    assert t.recipients == {"bob", "carol"}  # not "nobody": never a member
    with pytest.raises(GroupError, match="leave_group"):
        gs.remove("alice", state("alice", "bob"), ["alice"])


def test_leave_forgets_the_group_and_tells_the_others() -> None:
    t = gs.leave("bob", state("alice", "bob"))
    assert t.state is None and t.members == ("alice",) and t.action is GroupAction.LEAVE
    assert t.recipients == {"alice"} and t.removed == {"bob"} and t.rotate


# --- remote changes --------------------------------------------------------------------------


def test_a_change_from_a_non_member_is_refused() -> None:
    with pytest.raises(GroupError, match="non-member"):
        gs.receive("alice", state("alice", "bob"), "mallory", update(GroupAction.ADD, "mallory",
                                                                     epoch=2))  # fmt: skip


def test_joining_counts_every_member_as_old() -> None:
    t = gs.receive("bob", None, "alice", update(GroupAction.CREATE, "alice", "bob", epoch=7))
    assert t is not None and t.state == state("alice", "bob", epoch=7,
                                              since={"alice": 0, "bob": 0})  # fmt: skip
    # A removal or leave for a group we do not know is nothing to us.
    assert gs.receive("bob", None, "alice", update(GroupAction.REMOVE, "alice", epoch=2)) is None


def test_a_newer_removal_rotates_and_drops_the_removed_keys() -> None:
    t = gs.receive("bob", state("alice", "bob", "carol"), "alice",
                   update(GroupAction.REMOVE, "alice", "bob", epoch=2))  # fmt: skip
    assert t is not None and t.members == ("alice", "bob") and t.epoch == 2
    assert t.removed == {"carol"} and t.rotate


def test_being_removed_forgets_the_group() -> None:
    t = gs.receive("carol", state("alice", "bob", "carol"), "alice",
                   update(GroupAction.REMOVE, "alice", "bob", epoch=2))  # fmt: skip
    assert t is not None and t.state is None and not t.rotate


def test_a_stale_add_is_ignored() -> None:
    current = state("alice", "bob", epoch=2)
    assert gs.receive("bob", current, "alice", update(GroupAction.ADD, "alice", "bob", "dave",
                                                      epoch=2)) is None  # fmt: skip


def test_a_stale_removal_still_removes_members_older_than_its_epoch() -> None:
    # Bob added dave at epoch 2 while alice, also at epoch 1, removed carol (epoch 2).
    current = state("alice", "bob", "carol", "dave", epoch=2,
                    since={"alice": 0, "bob": 0, "carol": 0, "dave": 2})  # fmt: skip
    t = gs.receive("bob", current, "alice", update(GroupAction.REMOVE, "alice", "bob", epoch=2))
    assert t is not None and t.members == ("alice", "bob", "dave") and t.epoch == 2
    assert t.removed == {"carol"} and t.rotate
    assert t.state is not None and t.state.since["dave"] == 2


def test_a_stale_leave_always_removes_the_leaver() -> None:
    current = state("alice", "bob", epoch=2)  # alice renamed the group meanwhile
    t = gs.receive("alice", current, "bob", update(GroupAction.LEAVE, "alice", epoch=2))
    assert t is not None and t.members == ("alice",) and t.removed == {"bob"}


def test_removals_win_in_either_order() -> None:
    """Carol sees alice's removal of dave and bob's concurrent add of erin (both epoch 2)."""
    start = state(
        "alice", "bob", "carol", "dave", since=dict.fromkeys(("alice", "bob", "carol", "dave"), 0)
    )
    removal = update(GroupAction.REMOVE, "alice", "bob", "carol", epoch=2)
    addition = update(GroupAction.ADD, "alice", "bob", "carol", "dave", "erin", epoch=2)
    for first, second in (((removal, "alice"), (addition, "bob")),
                          ((addition, "bob"), (removal, "alice"))):  # fmt: skip
        current: gs.GroupState | None = start
        for u, sender in (first, second):
            t = gs.receive("carol", current, sender, u)
            current = current if t is None else t.state
        assert current is not None and "dave" not in current.members


def test_sharing_with_a_new_device_adds_the_group_there_only() -> None:
    current = state("alice", "bob", epoch=5, since={"alice": 0, "bob": 3})
    shared = gs.share(current, 9)
    assert shared.action is GroupAction.ADD and shared.epoch == 5
    assert gs.receive("alice", current, "alice", shared) is None  # knows it: ignored
    t = gs.receive("alice", None, "alice", shared)  # the new device
    assert t is not None and t.state is not None and t.state.members == ("alice", "bob")


# --- sender-key distribution -------------------------------------------------------------------


DEVICES = [("alice", 2), ("bob", 1), ("bob", 2), ("carol", 1)]


def test_a_new_key_goes_to_every_member_device() -> None:
    assert gs.distribution("alice", DEVICES, set()) == gs.Distribution(False, tuple(DEVICES))
    assert gs.distribution("alice", DEVICES, set(DEVICES)) == gs.Distribution(False, ())


def test_a_members_new_device_gets_the_key_with_that_members_other_devices() -> None:
    plan = gs.distribution("alice", DEVICES, {("alice", 2), ("bob", 1), ("carol", 1)})
    # Every device of bob (the relay's rule) and our own, not carol's.
    assert plan == gs.Distribution(False, (("alice", 2), ("bob", 1), ("bob", 2)))


def test_a_holder_that_is_gone_rotates_the_key_for_everyone() -> None:
    holders = {*DEVICES, ("bob", 3)}  # bob unlinked device 3
    assert gs.distribution("alice", DEVICES, holders) == gs.Distribution(True, tuple(DEVICES))


# --- the store side executes the transitions -----------------------------------------------------


def test_the_group_book_stores_what_the_machine_decided() -> None:
    store = MemoryStore()
    book = GroupBook(store, DeviceAddress("alice", 1))
    with store.transaction():
        book.apply(gs.create("alice", GID, "g", ["bob", "carol"]), "alice", 100.0)
    key = book.own_key(GID).key_id
    before = book.state(GID)
    assert before is not None and before.epoch == 1 and book.get(GID) is not None
    with store.transaction():
        book.apply(gs.remove("alice", before, ["carol"]), "alice", 200.0)
    after = book.state(GID)
    assert after == gs.GroupState(GID, "g", ("alice", "bob"), 2, {"alice": 0, "bob": 0})
    assert book.own_key(GID).key_id != key  # rotated
    group = book.get(GID)
    assert group is not None and group.created_at == 100.0
    with store.transaction():
        book.apply(gs.leave("alice", after), "alice", 300.0)
    assert book.state(GID) is None and book.epoch(GID) == 0


# --- through the fake relay: the machine, the protocol and the engine together -----------------


def _run(device: Device, users: set[str], build: Callable[[], list[OutgoingSend]]) -> None:
    """Send what ``build`` makes as the shell does (retries included) and, like the pipeline,
    run each accepted send's ``accepted`` hook (which records who holds our sender key)."""
    made: list[OutgoingSend] = []

    def recording() -> list[OutgoingSend]:
        sends = build()
        made.extend(sends)
        return sends

    key = f"k{len(device.builds)}"
    device.builds[key] = recording
    device.feed(device.engine.sends.submit(key, users, device.clock))
    device.run()
    assert isinstance(device.outcome(key), Finished)
    stored = {cid for who, cid in device.relay.log if who == device.address}
    with device.proto.store.transaction():
        for send in made:
            if send.accepted is not None and send.client_id in stored:
                send.accepted()


def _direct(device: Device, to: str, content: GroupUpdate) -> None:
    _run(device, {to, device.proto.username}, lambda: [device.proto.encode_direct(to, content)])


def _group_text(device: Device, text: str) -> None:
    content = TextContent(text=text, group_id=GID, sent_at_ms=1)
    group = device.proto.groups.get(GID)
    assert group is not None
    _run(device, set(group.members), lambda: device.proto.encode_group(GID, content))


def _group_texts(device: Device) -> list[str]:
    return [e.text or "" for e in device.receive() if isinstance(e, Message) and e.text]


def test_a_members_new_device_gets_the_key_and_an_unlinked_one_no_later_key() -> None:
    relay = FakeRelay()
    alice, bob = Device.register(relay, "alice"), Device.register(relay, "bob")
    _direct(alice, "bob", alice.proto.apply_group_change(gs.create("alice", GID, "g", ["bob"])))
    assert [type(e).__name__ for e in bob.receive()] == ["GroupChanged"]
    _group_text(alice, "one")
    assert _group_texts(bob) == ["one"]
    first_key = alice.proto.groups.own_key(GID).key_id

    # Bob links a phone; his laptop hands it the group (as share_with_own_devices does).
    account = bob.proto.identity.account_key
    phone = Device.register(relay, "bob", account, device_id=2)
    bob_state = bob.proto.groups.state(GID)
    assert bob_state is not None
    _direct(bob, "bob", gs.share(bob_state, 1))
    phone.receive()
    assert phone.proto.groups.get(GID) is not None
    # Alice's next send meets a mismatch (bob has a device she did not know), refetches his
    # list and hands the same key to both his devices.
    _group_text(alice, "two")
    assert _group_texts(bob) == ["two"] and _group_texts(phone) == ["two"]
    assert alice.proto.groups.own_key(GID).key_id == first_key

    # Bob unlinks the phone: alice's next send rotates, and the phone gets nothing more.
    del relay.devices["bob"][2]
    entries = (bob.proto.identity.entry(),)
    relay.device_lists["bob"] = DeviceList("bob", 3, entries).sign(account).to_bytes()
    _group_text(alice, "three")
    assert alice.proto.groups.own_key(GID).key_id != first_key
    assert _group_texts(bob) == ["three"] and relay.queues[phone.address] == []
