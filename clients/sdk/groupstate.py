"""The group state machine, sans-I/O: membership, epochs and when our sender key changes hands.

Values in, decisions out; nothing here touches the store, a socket or a clock (the store side
is :class:`~clients.sdk.groups.GroupBook`, the sends :mod:`clients.sdk.group_admin`)::

    local change   create / add / remove / leave (GroupState, what the user asked)
                     → Transition (state after, removed members, rotate?, who to tell)
    remote change  receive(GroupState | None, sender, GroupUpdate) → Transition | None
    group send     distribution(our devices list, who holds our key) → Distribution
                     (rotate first?, which devices get our sender key pairwise)
    new device     share(GroupState, sent_at_ms) → the GroupUpdate our own devices get

**Epochs.** Every change carries the full new member list and ``epoch + 1``. An update at an
epoch we already passed is stale: ignored, except that *removals always win* — a stale
``remove``/``leave`` still removes, from our current list, every member it omits that was
already a member before its epoch (a leaver always), so a removed member never stays in by a
race. Members added at or after its epoch were unknown to its sender and stay. For that we
keep, per member, the epoch at which we saw them *added* (:attr:`GroupState.since`; 0 for
everyone present when we joined: we cannot know better, so we fail closed).

**Sender keys.** Removing a member, or seeing one removed, rotates our sending key: the next
send distributes a new one that only the remaining members receive. Before a send, every
member device without our current key gets it pairwise; if a device that holds it is no
longer a member device (an unlinked laptop), the key rotates first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from clients.sdk.content import GroupAction, GroupUpdate
from clients.sdk.errors import GroupError

__all__ = [
    "Distribution",
    "GroupState",
    "Transition",
    "add",
    "change",
    "check_sender",
    "create",
    "distribution",
    "leave",
    "receive",
    "remove",
    "share",
]

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class GroupState:
    """One group as this device knows it."""

    group_id: bytes
    name: str
    #: Usernames, sorted.
    members: tuple[str, ...]
    #: The last applied membership epoch.
    epoch: int
    #: Per member, the epoch at which we saw them added (0: a member when we joined).
    since: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Transition:
    """A membership change to apply (and, for a local change, to announce)."""

    group_id: bytes
    action: GroupAction
    name: str
    #: The member list as applied (without us when we left or were removed).
    members: tuple[str, ...]
    epoch: int
    #: The state after; ``None``: we are no longer a member, forget the group.
    state: GroupState | None
    #: Members whose sender keys we drop.
    removed: frozenset[str] = frozenset()
    #: Throw our sending key away (the next send distributes a new one).
    rotate: bool = False
    #: Who gets the :class:`GroupUpdate` (local changes; never empty: ourselves when alone).
    recipients: frozenset[str] = frozenset()

    def update(self, sent_at_ms: int) -> GroupUpdate:
        """The content announcing this change."""
        return GroupUpdate(
            group_id=self.group_id,
            epoch=self.epoch,
            name=self.name,
            action=self.action,
            members=self.members,
            sent_at_ms=sent_at_ms,
        )


def _since(before: GroupState | None, members: Iterable[str], epoch: int) -> dict[str, int]:
    """Members we knew keep their epoch; new ones are added at ``epoch``; joining a group, we
    count everyone as old (0), so that a concurrent removal of any of them applies."""
    known = before.since if before is not None else {}
    return {m: known.get(m, epoch if before is not None else 0) for m in sorted(set(members))}


def _state(
    group_id: bytes, name: str, members: tuple[str, ...], epoch: int, before: GroupState | None
) -> GroupState:
    return GroupState(group_id, name, members, epoch, _since(before, members, epoch))


# --- local changes -------------------------------------------------------------------------


def change(
    own: str,
    group_id: bytes,
    before: GroupState | None,
    name: str,
    members: Iterable[str],
    action: GroupAction,
    *,
    also_tell: Iterable[str] = (),
) -> Transition:
    """Our own change to ``members`` (the full new list) at the next epoch."""
    after = tuple(sorted(set(members)))
    epoch = (before.epoch if before is not None else 0) + 1
    removed = frozenset(set(before.members) - set(after)) if before is not None else frozenset()
    tell = (set(after) | set(also_tell)) - {own}
    return Transition(
        group_id,
        action,
        name,
        after,
        epoch,
        _state(group_id, name, after, epoch, before) if own in after else None,
        removed,
        rotate=bool(removed),
        recipients=frozenset(tell or {own}),
    )


def create(own: str, group_id: bytes, name: str, members: Iterable[str]) -> Transition:
    """A new group with ``members`` and us."""
    return change(own, group_id, None, name, {*members, own}, GroupAction.CREATE)


def add(own: str, group: GroupState, members: Iterable[str]) -> Transition:
    """Add ``members`` (every member receives the full new list)."""
    users = {*group.members, *members}
    return change(own, group.group_id, group, group.name, users, GroupAction.ADD)


def remove(own: str, group: GroupState, members: Iterable[str]) -> Transition:
    """Remove ``members``; the removed ones are told too, everyone left rotates."""
    gone = set(members)
    if own in gone:
        raise GroupError("use leave_group to leave")
    users = set(group.members) - gone
    return change(
        own,
        group.group_id,
        group,
        group.name,
        users,
        GroupAction.REMOVE,
        also_tell=gone & set(group.members),
    )


def leave(own: str, group: GroupState) -> Transition:
    """Leave: the others are told and rotate; we forget the group."""
    users = set(group.members) - {own}
    return change(own, group.group_id, group, group.name, users, GroupAction.LEAVE, also_tell=[own])


def share(group: GroupState, sent_at_ms: int) -> GroupUpdate:
    """The update that tells our own devices (a newly linked one) about ``group`` at its current
    epoch: a device that knows the group ignores it, a new device adds it."""
    same = Transition(
        group.group_id, GroupAction.ADD, group.name, group.members, group.epoch, group
    )
    return same.update(sent_at_ms)


# --- remote changes ------------------------------------------------------------------------


def check_sender(group: GroupState | None, sender: str) -> None:
    """A membership change to a group we know comes only from one of its members."""
    if group is not None and sender not in group.members:
        raise GroupError("membership change from a non-member")


def receive(
    own: str, group: GroupState | None, sender: str, update: GroupUpdate
) -> Transition | None:
    """What ``sender``'s ``update`` does to ``group`` (``None``: nothing, e.g. stale)."""
    check_sender(group, sender)
    epoch, name = update.epoch, update.name
    members = tuple(sorted(set(update.members)))
    if group is not None and update.epoch <= group.epoch:
        gone = _stale_removals(group, update, sender)
        if not gone:
            return None
        # Removals still apply to our current list: a removed member never stays by a race.
        epoch, name = group.epoch, group.name
        members = tuple(sorted(set(group.members) - gone))
    if group is None and update.action not in (GroupAction.CREATE, GroupAction.ADD):
        return None
    if own not in members:
        return Transition(update.group_id, update.action, name, members, epoch, None)
    removed = frozenset(set(group.members) - set(members)) if group is not None else frozenset()
    return Transition(
        update.group_id,
        update.action,
        name,
        members,
        epoch,
        _state(update.group_id, name, members, epoch, group),
        removed,
        rotate=bool(removed),
    )


def _stale_removals(group: GroupState, update: GroupUpdate, sender: str) -> set[str]:
    """Who a REMOVE/LEAVE at a stale epoch removes from our list: members it omits that were
    already members before its epoch (so its sender meant to drop them); a leaver always."""
    if update.action not in (GroupAction.REMOVE, GroupAction.LEAVE):
        return set()
    gone = {
        m for m in group.members if m not in update.members and group.since.get(m, 0) < update.epoch
    }
    if update.action is GroupAction.LEAVE and sender not in update.members:
        gone.add(sender)
    return gone


# --- sender-key distribution -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Distribution:
    """Before a group send: rotate our key first? which devices get it pairwise?"""

    rotate: bool
    #: Devices to send our (possibly new) sender key to; empty: none needed.
    targets: tuple[Address, ...]


def distribution(own: str, devices: Iterable[Address], holders: Iterable[Address]) -> Distribution:
    """``devices``: every member device but this one; ``holders``: devices known to hold our
    current key. A holder that is no longer a member device (unlinked) makes us rotate. The
    relay's rule for every send is all devices of every user it names and all our own other
    devices, so the key goes to every device of each user with a device that lacks it (those
    that hold it ignore the repeat), e.g. a member who just linked a new device."""
    current = list(devices)
    have = set(holders)
    rotate = bool(have - set(current))
    if rotate:
        have = set()
    need = [d for d in current if d not in have]
    if not need:
        return Distribution(rotate, ())
    users = {u for u, _ in need} | {own}
    return Distribution(rotate, tuple(d for d in current if d[0] in users))
