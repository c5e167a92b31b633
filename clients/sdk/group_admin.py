"""Group administration over :class:`~clients.sdk.core.Core`: create a group, add and remove
members, leave, send to a group, and tell our other devices about every group.

This module only executes: the decisions (the new member list and epoch, who is told, whose
sender keys go, when our key rotates, how concurrent changes merge) are the sans-I/O state
machine :mod:`clients.sdk.groupstate`; :class:`~clients.sdk.groups.GroupBook` stores its
states, :class:`~clients.sdk.protocol.ClientProtocol` applies remote changes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from pathlib import Path

from clients.sdk import attachments, groupstate, peers, trust
from clients.sdk.attachments import Progress
from clients.sdk.content import TextContent
from clients.sdk.core import Core
from clients.sdk.errors import ClientError, GroupError
from clients.sdk.groups import new_group_id
from clients.sdk.models import GroupInfo, SendResult
from clients.store.models import group_conversation

__all__ = [
    "add_members",
    "announce",
    "create_group",
    "groups",
    "leave_group",
    "remove_members",
    "resolve",
    "send_group_file",
    "send_group_text",
    "share_with_own_devices",
]


def groups(core: Core) -> list[GroupInfo]:
    """Groups this device belongs to."""
    out = []
    for group in core.store.list_groups():
        gid = bytes.fromhex(group.group_id)
        epoch = core.protocol.groups.epoch(gid)
        out.append(GroupInfo(group.group_id, group.name, group.members, epoch))
    return out


def resolve(core: Core, group: str) -> tuple[bytes, GroupInfo]:
    """Resolve a group by id, ``group:<id>`` or (unique) name."""
    key = group.removeprefix("group:")
    for info in groups(core):
        if info.group_id == key:
            return bytes.fromhex(info.group_id), info
    named = [info for info in groups(core) if info.name in (group, key)]
    if len(named) == 1:
        return bytes.fromhex(named[0].group_id), named[0]
    if len(named) > 1:
        raise GroupError(f"several groups are named {group!r}; use the id")
    raise GroupError(f"unknown group {group!r}")


def _state(core: Core, group: str) -> groupstate.GroupState:
    group_id, _ = resolve(core, group)
    state = core.protocol.groups.state(group_id)
    if state is None:
        raise GroupError(f"unknown group {group!r}")
    return state


async def announce(core: Core, change: groupstate.Transition) -> GroupInfo:
    """Execute our own membership ``change``: sessions with everyone concerned, apply it
    locally, send the update pairwise to its recipients."""
    for member in change.members:
        if member != core.username:
            trust.require_trusted(core.store, member)
    await peers.ensure_sessions(core, set(change.members) | change.recipients | {core.username})
    update = core.protocol.apply_group_change(change)
    await core.send_direct(set(change.recipients), update)
    return GroupInfo(change.group_id.hex(), change.name, change.members, change.epoch)


async def create_group(core: Core, name: str, members: Iterable[str]) -> GroupInfo:
    """Create a group with ``members`` (usernames; we are added)."""
    change = groupstate.create(core.username, new_group_id(), name, members)
    for user in change.members:
        peers.check_user(user)
    return await announce(core, change)


async def add_members(core: Core, group: str, members: Iterable[str]) -> GroupInfo:
    """Add members to a group (they receive the full member list)."""
    change = groupstate.add(core.username, _state(core, group), members)
    for user in change.members:
        peers.check_user(user)
    return await announce(core, change)


async def remove_members(core: Core, group: str, members: Iterable[str]) -> GroupInfo:
    """Remove members; every remaining member rotates its sender key."""
    return await announce(core, groupstate.remove(core.username, _state(core, group), members))


async def leave_group(core: Core, group: str) -> None:
    """Leave a group (the others rotate their sender keys)."""
    await announce(core, groupstate.leave(core.username, _state(core, group)))


async def send_group_text(core: Core, group: str, text: str) -> SendResult:
    """Send a text to a group (encrypted once with our sender key)."""
    group_id, _ = resolve(core, group)
    content = TextContent(text=text, group_id=group_id, sent_at_ms=_now_ms())
    return await core.send_chat(group_conversation(group_id.hex()), content)


async def send_group_file(
    core: Core, group: str, path: Path | str, *, progress: Progress | None = None
) -> SendResult:
    """Send a file to a group."""
    group_id, _ = resolve(core, group)
    return await attachments.send_file(
        core, group_conversation(group_id.hex()), path, progress=progress
    )


async def share_with_own_devices(core: Core) -> None:
    """Tell our other devices (e.g. a newly linked one) about every group, at its current
    epoch: devices that know the group ignore it, a new device adds it."""
    for info in groups(core):
        state = core.protocol.groups.state(bytes.fromhex(info.group_id))
        if state is None:
            continue
        with contextlib.suppress(ClientError):
            await core.send_direct(core.username, groupstate.share(state, _now_ms()))


def _now_ms() -> int:
    return int(time.time() * 1000)
