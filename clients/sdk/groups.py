"""Group bookkeeping: membership, epochs, our sender key and who has received it, in the store.

The decisions (what a change does, when our key rotates, who gets it) are the sans-I/O state
machine :mod:`clients.sdk.groupstate`; :meth:`GroupBook.state` hands it the stored
:class:`~clients.sdk.groupstate.GroupState` and :meth:`GroupBook.apply` executes its
:class:`~clients.sdk.groupstate.Transition`.

Groups are client-side only: the relay sees one payload addressed to many devices. A group
is ``(group_id (16 random bytes, hex in the store), name, members (usernames), epoch)``.
Membership changes travel as pairwise-encrypted :class:`~clients.sdk.content.GroupUpdate`
contents carrying the full new member list and ``epoch + 1``.

Sender keys are distributed lazily: before a group send, every member device that has not
received our *current* sender key gets a pairwise ``SENDER_KEY`` content. Removing a member
(or seeing a member removed) deletes our sending state, so the next send creates a new key
(new ``key_id``) that only the remaining members receive: the removed member cannot read it.

For every other member device we keep a :class:`~crypto.sender_keys.SenderKeyRecord`: its
newest few receiving states, so a message still in flight under a key the sender has since
replaced (a retried send, a queue drained after a rotation) decrypts with the older state.
"""

from __future__ import annotations

import json
import os

from clients.sdk.groupstate import GroupState, Transition
from clients.store.base import Store
from clients.store.models import Group
from crypto.errors import DecodeError
from crypto.keys import DeviceAddress
from crypto.sender_keys import SenderKeyDistribution, SenderKeyRecord, SenderKeyState

__all__ = ["GroupBook", "new_group_id"]


def new_group_id() -> bytes:
    """A fresh 16-byte group id."""
    return os.urandom(16)


class GroupBook:
    """Store-backed group state of one device."""

    def __init__(self, store: Store, own: DeviceAddress) -> None:
        self._store = store
        self._own = own

    # --- membership ------------------------------------------------------------------

    def get(self, group_id: bytes) -> Group | None:
        """The group, or None if unknown (or we were removed)."""
        return self._store.get_group(group_id.hex())

    def epoch(self, group_id: bytes) -> int:
        """The last applied membership epoch (0 for an unknown group)."""
        value = self._store.get_setting(f"group_epoch:{group_id.hex()}")
        return int(value) if value else 0

    def since(self, group_id: bytes) -> dict[str, int]:
        """Per member, the epoch at which we saw them added (0: a member when we joined)."""
        raw = self._store.get_setting(f"group_since:{group_id.hex()}")
        return {str(k): int(v) for k, v in json.loads(raw).items()} if raw else {}

    def state(self, group_id: bytes) -> GroupState | None:
        """The group as the state machine (:mod:`clients.sdk.groupstate`) sees it."""
        group = self.get(group_id)
        if group is None:
            return None
        return GroupState(
            group_id, group.name, group.members, self.epoch(group_id), self.since(group_id)
        )

    def apply(self, transition: Transition, by: str, now: float) -> None:
        """Store what the state machine decided (call inside a store transaction)."""
        gid, after = transition.group_id, transition.state
        if after is None:
            self.forget(gid)
        else:
            existing = self.get(gid)
            created_by = existing.created_by if existing else by
            created_at = existing.created_at if existing else now
            self._store.put_group(
                Group(gid.hex(), after.name, after.members, created_by, created_at)
            )
            self._store.set_setting(f"group_epoch:{gid.hex()}", str(after.epoch))
            self._store.set_setting(f"group_since:{gid.hex()}", json.dumps(dict(after.since)))
        for username in transition.removed:
            self.forget_member_keys(gid, username)
        if transition.rotate:
            self.rotate(gid)

    def forget(self, group_id: bytes) -> None:
        """Drop a group entirely (we were removed or left)."""
        self._store.delete_group(group_id.hex())
        self._store.set_setting(f"group_epoch:{group_id.hex()}", None)
        self._store.set_setting(f"group_since:{group_id.hex()}", None)
        self._store.set_setting(f"skd:{group_id.hex()}", None)

    # --- our sending key ---------------------------------------------------------------

    def own_key(self, group_id: bytes) -> SenderKeyState:
        """Our sending state in the group, created (new key id) if there is none."""
        data = self._store.load_own_sender_key(group_id.hex())
        if data is not None:
            return SenderKeyState.from_bytes(data)
        state = SenderKeyState.create(group_id, self._own)
        self._store.store_own_sender_key(group_id.hex(), state.to_bytes())
        self._store.set_setting(f"skd:{group_id.hex()}", None)
        return state

    def save_own_key(self, group_id: bytes, state: SenderKeyState) -> None:
        """Store our advanced sending state."""
        self._store.store_own_sender_key(group_id.hex(), state.to_bytes())

    def rotate(self, group_id: bytes) -> None:
        """Throw our sending key away: the next send creates and distributes a new one."""
        previous = self._store.load_own_sender_key(group_id.hex())
        if previous is None:
            return
        state = SenderKeyState.from_bytes(previous).rotate()
        self._store.store_own_sender_key(group_id.hex(), state.to_bytes())
        self._store.set_setting(f"skd:{group_id.hex()}", None)

    def distributed(self, group_id: bytes, key_id: int) -> set[tuple[str, int]]:
        """Devices that already hold our key ``key_id``."""
        raw = self._store.get_setting(f"skd:{group_id.hex()}")
        if not raw:
            return set()
        data = json.loads(raw)
        if data.get("key_id") != key_id:
            return set()
        return {(u, int(d)) for u, d in data.get("devices", [])}

    def mark_distributed(self, group_id: bytes, key_id: int, devices: set[tuple[str, int]]) -> None:
        """Record that ``devices`` received our key ``key_id``."""
        have = self.distributed(group_id, key_id) | devices
        value = json.dumps({"key_id": key_id, "devices": sorted([u, d] for u, d in have)})
        self._store.set_setting(f"skd:{group_id.hex()}", value)

    # --- others' keys --------------------------------------------------------------------

    def record(self, group_id: bytes, sender: DeviceAddress) -> SenderKeyRecord | None:
        """The receiving states we hold for a member device, newest first (None: none yet)."""
        data = self._store.load_sender_key(group_id.hex(), sender.username, sender.device_id)
        if data is None:
            return None
        try:
            return SenderKeyRecord.from_bytes(data)
        except DecodeError:
            # Stores written before records held one bare state per sender device.
            return SenderKeyRecord([SenderKeyState.from_bytes(data)])

    def receiving(self, group_id: bytes, sender: DeviceAddress) -> SenderKeyState | None:
        """The newest receiving state of a member device, if we received one."""
        record = self.record(group_id, sender)
        return None if record is None else record.state(record.key_ids[0])

    def save_record(self, group_id: bytes, sender: DeviceAddress, record: SenderKeyRecord) -> None:
        """Store a member device's record (after a decrypt advanced one of its states)."""
        self._store.store_sender_key(
            group_id.hex(), sender.username, sender.device_id, record.to_bytes()
        )

    def add_distribution(self, distribution: SenderKeyDistribution) -> None:
        """Import a member device's (new) sender key; a re-sent one changes nothing."""
        record = self.record(distribution.group_id, distribution.sender) or SenderKeyRecord()
        if distribution.key_id in record.key_ids:
            return
        record.add(distribution)
        self.save_record(distribution.group_id, distribution.sender, record)

    def forget_member_keys(self, group_id: bytes, username: str) -> None:
        """Drop a removed member's sender keys."""
        self._store.delete_sender_keys(group_id.hex(), username)
