""":class:`~clients.tui.backend.ChatBackend` over a running ``vox daemon`` (JSON-RPC), so
``vox chat`` can attach to the daemon that holds the profile.

The profile directory is the socket's directory (``HOME/vox.sock``): ``/save`` writes to
``HOME/downloads`` as with a profile opened directly (the daemon writes the file). The relay
connection's state is the daemon's ``status`` method, asked every :data:`STATUS_EVERY_S`
seconds, so the attached window shows ``offline`` / ``back online`` too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from clients.daemon.codec import event_from_json, message_from_json
from clients.daemon.remote import RemoteApi
from clients.sdk.errors import ClientError
from clients.sdk.models import Event, GroupInfo, Message, ServerConfig, Verification, Withdrawn
from clients.tui.backend import ConversationItem

__all__ = ["STATUS_EVERY_S", "DaemonBackend"]

#: How often the attached window asks the daemon whether the relay connection is up.
STATUS_EVERY_S = 0.5


class DaemonBackend:
    """The TUI's view of a daemon (``progress`` callbacks are not carried over the socket)."""

    def __init__(self, api: RemoteApi, home: Path | None = None) -> None:
        self.api = api
        self._home = home
        self._connected = False
        self._watcher: asyncio.Task[None] | None = None

    @classmethod
    async def connect_to(cls, path: Path) -> DaemonBackend:
        """Attach to the daemon listening on ``path`` (``HOME/vox.sock``)."""
        return cls(await RemoteApi.connect(path), home=path.parent)

    async def close(self) -> None:
        """Detach (the daemon keeps running)."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await self.api.close()

    @property
    def username(self) -> str:
        return self.api.username

    @property
    def device_id(self) -> int:
        return self.api.device_id

    @property
    def home(self) -> Path | None:
        """The profile directory (where the daemon's socket is)."""
        return self._home

    @property
    def connected(self) -> bool:
        """The daemon's relay connection, as its ``status`` method last reported it (false
        once the daemon itself is gone)."""
        return self._connected

    async def _status(self) -> bool:
        try:
            self._connected = bool((await self.api.status())["connected"])
        except ClientError:  # the daemon went away
            self._connected = False
            return False
        return True

    async def _watch_status(self) -> None:
        while True:
            if not await self._status():
                return
            await asyncio.sleep(STATUS_EVERY_S)

    async def _call(self, method: str, **params: Any) -> Any:
        return await self.api.rpc.call(method, **params)

    async def server_config(self) -> ServerConfig:
        value = await self._call("config")
        return ServerConfig(**value)

    async def conversation_list(self) -> list[ConversationItem]:
        return [ConversationItem(**item) for item in await self._call("conversation_list")]

    async def history(self, conversation: str, limit: int = 200) -> list[Message]:
        rows = await self._call("history", conversation=conversation, limit=limit)
        return [message_from_json(row) for row in rows]

    async def mark_read(self, conversation: str) -> None:
        await self._call("mark_read", conversation=conversation)

    async def send_text(self, conversation: str, text: str) -> str:
        return (await self.api.send_text(conversation, text)).id

    async def send_file(
        self, conversation: str, path: Path, progress: Callable[[int, int], None] | None = None
    ) -> str:
        return (await self.api.send_file(conversation, path)).id

    async def send_typing(self, conversation: str, active: bool) -> None:
        await self._call("typing", to=conversation, active=active)

    async def reply(self, conversation: str, message_id: str, text: str) -> str:
        return (await self.api.reply(conversation, message_id, text)).id

    async def edit(self, conversation: str, message_id: str, text: str) -> None:
        await self.api.edit(conversation, message_id, text)

    async def delete(
        self, conversation: str, message_id: str, *, for_me: bool = False
    ) -> Withdrawn | None:
        deleted = await self.api.delete(conversation, message_id, for_me=for_me)
        return deleted if isinstance(deleted, Withdrawn) else None

    async def react(
        self, conversation: str, message_id: str, emoji: str, *, remove: bool = False
    ) -> None:
        await self.api.react(conversation, message_id, emoji, remove=remove)

    async def set_timer(self, conversation: str, seconds: int) -> None:
        await self.api.set_timer(conversation, seconds)

    async def search(self, query: str, limit: int = 50) -> list[Message]:
        return await self.api.search(query, limit=limit)

    async def verify(self, username: str) -> Verification:
        return await self.api.verify(username)

    async def accept_identity(self, username: str) -> Verification:
        return await self.api.accept_key(username)

    async def clear_identity(self, username: str) -> Verification:
        return await self.api.clear_verification(username)

    async def groups(self) -> list[GroupInfo]:
        return await self.api.list_groups()

    async def download(
        self, message: Message, dest: Path, progress: Callable[[int, int], None] | None = None
    ) -> Path:
        return await self.api.download(message, dest)

    async def create_group(self, name: str, members: list[str]) -> GroupInfo:
        return await self.api.create_group(name, members)

    async def add_members(self, group: str, members: list[str]) -> GroupInfo:
        return await self.api.add_members(group, members)

    async def remove_members(self, group: str, members: list[str]) -> GroupInfo:
        return await self.api.remove_members(group, members)

    async def leave_group(self, group: str) -> None:
        await self.api.leave_group(group)

    async def connect(self) -> None:
        """The daemon is (or keeps trying to get) online by itself: learn its state, then
        keep asking (:attr:`connected`)."""
        if self._watcher is None:
            await self._status()
            self._watcher = asyncio.create_task(self._watch_status(), name="vox-daemon-status")

    async def events(self) -> AsyncIterator[Event]:
        async for value in self.api.rpc.events():
            event = event_from_json(value)
            if event is not None:
                yield event
