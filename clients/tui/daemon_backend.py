""":class:`~clients.tui.backend.ChatBackend` over a running ``vox daemon`` (JSON-RPC), so
``vox chat`` can attach to the daemon that holds the profile."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from clients.daemon.codec import event_from_json, message_from_json
from clients.daemon.remote import RemoteApi
from clients.sdk.models import Event, GroupInfo, Message, ServerConfig, Verification
from clients.tui.backend import ConversationItem

__all__ = ["DaemonBackend"]


class DaemonBackend:
    """The TUI's view of a daemon (``progress`` callbacks are not carried over the socket)."""

    def __init__(self, api: RemoteApi) -> None:
        self.api = api

    @classmethod
    async def connect_to(cls, path: Path) -> DaemonBackend:
        """Attach to the daemon listening on ``path``."""
        return cls(await RemoteApi.connect(path))

    async def close(self) -> None:
        """Detach (the daemon keeps running)."""
        await self.api.close()

    @property
    def username(self) -> str:
        return self.api.username

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

    async def verify(self, username: str) -> Verification:
        return await self.api.verify(username)

    async def accept_identity(self, username: str) -> Verification:
        return await self.api.accept_key(username)

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
        """The daemon is (or keeps trying to get) online by itself."""

    async def events(self) -> AsyncIterator[Event]:
        async for value in self.api.rpc.events():
            event = event_from_json(value)
            if event is not None:
                yield event
