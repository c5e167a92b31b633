"""Group administration over :class:`~clients.sdk.core.Core`: create a group, add and remove
members, leave, send to a group, and tell our other devices about every group.

The group state machine itself (epochs, sender keys, concurrent changes) is
:class:`~clients.sdk.groups.GroupBook`, driven by :class:`~clients.sdk.protocol.ClientProtocol`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from pathlib import Path

from clients.sdk import attachments, peers, trust
from clients.sdk.attachments import Progress
from clients.sdk.content import GroupAction, GroupUpdate, TextContent
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


async def announce(
    core: Core,
    group_id: bytes,
    name: str,
    members: tuple[str, ...],
    action: GroupAction,
    extra: Iterable[str] = (),
) -> GroupInfo:
    for member in members:
        if member != core.username:
            trust.require_trusted(core.store, member)
    await peers.ensure_sessions(core, set(members) | set(extra) | {core.username})
    update = core.protocol.group_update(group_id, name, members, action)
    await core.send_direct((set(members) | set(extra)) - {core.username} or {core.username}, update)
    epoch = core.protocol.groups.epoch(group_id)
    return GroupInfo(group_id.hex(), name, tuple(sorted(set(members))), epoch)


async def create_group(core: Core, name: str, members: Iterable[str]) -> GroupInfo:
    """Create a group with ``members`` (usernames; we are added)."""
    users = tuple(sorted({*members, core.username}))
    for user in users:
        peers.check_user(user)
    return await announce(core, new_group_id(), name, users, GroupAction.CREATE)


async def add_members(core: Core, group: str, members: Iterable[str]) -> GroupInfo:
    """Add members to a group (they receive the full member list)."""
    group_id, info = resolve(core, group)
    users = tuple(sorted({*info.members, *members}))
    for user in users:
        peers.check_user(user)
    return await announce(core, group_id, info.name, users, GroupAction.ADD)


async def remove_members(core: Core, group: str, members: Iterable[str]) -> GroupInfo:
    """Remove members; every remaining member rotates its sender key."""
    group_id, info = resolve(core, group)
    gone = set(members)
    if core.username in gone:
        raise GroupError("use leave_group to leave")
    users = tuple(sorted(set(info.members) - gone))
    return await announce(
        core, group_id, info.name, users, GroupAction.REMOVE, extra=gone & set(info.members)
    )


async def leave_group(core: Core, group: str) -> None:
    """Leave a group (the others rotate their sender keys)."""
    group_id, info = resolve(core, group)
    users = tuple(sorted(set(info.members) - {core.username}))
    await announce(core, group_id, info.name, users, GroupAction.LEAVE, extra=[core.username])


async def send_group_text(core: Core, group: str, text: str) -> SendResult:
    """Send a text to a group (encrypted once with our sender key)."""
    group_id, _ = resolve(core, group)
    content = TextContent(text=text, group_id=group_id, sent_at_ms=int(time.time() * 1000))
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
        update = GroupUpdate(
            group_id=bytes.fromhex(info.group_id),
            epoch=info.epoch,
            name=info.name,
            action=GroupAction.ADD,
            members=info.members,
            sent_at_ms=int(time.time() * 1000),
        )
        with contextlib.suppress(ClientError):
            await core.send_direct(core.username, update)
