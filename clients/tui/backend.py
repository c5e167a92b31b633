"""What the TUI needs from the SDK, as a ``typing.Protocol`` (:class:`ChatBackend`).

The real implementation is :class:`SdkBackend` around :class:`clients.sdk.VoxClient`; anything
with the same shape works. The TUI never touches the store, the relay or the
crypto core itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from clients.sdk import VoxClient
from clients.sdk.errors import ClientError, RelayUnavailable
from clients.sdk.message_ops import timer
from clients.sdk.models import Event, GroupInfo, Message, ServerConfig, Verification, Withdrawn
from clients.store.models import TrustState, is_group_conversation

__all__ = ["ChatBackend", "ConversationItem", "SdkBackend"]


@dataclass(frozen=True, slots=True)
class ConversationItem:
    """A row of the conversation list."""

    conversation: str  # username, or "group:" + group id hex
    title: str
    unread: int = 0
    is_group: bool = False
    key_changed: bool = False
    timer: int = 0  # disappearing-messages timer in seconds (0 = off)


class ChatBackend(Protocol):
    """The asyncio SDK surface the TUI uses."""

    @property
    def username(self) -> str:
        """Our username."""
        ...

    @property
    def device_id(self) -> int:
        """This device's number (messages from our other devices show theirs)."""
        ...

    @property
    def home(self) -> Path | None:
        """The profile directory (``/save`` writes to its ``downloads`` folder)."""
        ...

    @property
    def connected(self) -> bool:
        """Whether the relay connection is up (the TUI shows drops and returns)."""
        ...

    async def server_config(self) -> ServerConfig:
        """The relay's brand and limits (``/v1/config``)."""
        ...

    async def conversation_list(self) -> list[ConversationItem]:
        """Contacts and groups with unread counts and key-change flags."""
        ...

    async def history(self, conversation: str, limit: int = 200) -> list[Message]:
        """The last messages of a conversation, oldest first."""
        ...

    async def mark_read(self, conversation: str) -> None:
        """Mark incoming messages read (sends read receipts)."""
        ...

    async def send_text(self, conversation: str, text: str) -> str:
        """Send a message; returns its id once the relay accepted it."""
        ...

    async def send_file(
        self, conversation: str, path: Path, progress: Callable[[int, int], None] | None = None
    ) -> str:
        """Encrypt, upload and send a file; returns the message id."""
        ...

    async def send_typing(self, conversation: str, active: bool) -> None:
        """Ephemeral typing indicator."""
        ...

    async def reply(self, conversation: str, message_id: str, text: str) -> str:
        """Send ``text`` quoting ``message_id``; returns the new message's id."""
        ...

    async def edit(self, conversation: str, message_id: str, text: str) -> None:
        """Replace the text of our message ``message_id``."""
        ...

    async def delete(
        self, conversation: str, message_id: str, *, for_me: bool = False
    ) -> Withdrawn | None:
        """Delete a message for everyone (our own), or only on this device. A
        :class:`Withdrawn`: it was our message still queued, withdrawn before it was sent (it
        reached no one; a timer change is undone here too)."""
        ...

    async def react(
        self, conversation: str, message_id: str, emoji: str, *, remove: bool = False
    ) -> None:
        """Set (or remove) our reaction to a message."""
        ...

    async def set_timer(self, conversation: str, seconds: int) -> None:
        """Set the conversation's disappearing-messages timer (0 = off)."""
        ...

    async def search(self, query: str, limit: int = 50) -> list[Message]:
        """Local history search over every conversation, newest first."""
        ...

    async def verify(self, username: str) -> Verification:
        """Safety number and trust state with ``username``."""
        ...

    async def accept_identity(self, username: str) -> Verification:
        """Accept ``username``'s changed account key (unblocks sending)."""
        ...

    async def clear_identity(self, username: str) -> Verification:
        """Take back the verification of ``username`` (trusted on first use again)."""
        ...

    async def groups(self) -> list[GroupInfo]:
        """Groups this device knows."""
        ...

    async def download(
        self, message: Message, dest: Path, progress: Callable[[int, int], None] | None = None
    ) -> Path:
        """Download, verify and decrypt a received file to ``dest`` (a file or a directory)."""
        ...

    async def create_group(self, name: str, members: list[str]) -> GroupInfo:
        """Create a group with ``members`` (we are added)."""
        ...

    async def add_members(self, group: str, members: list[str]) -> GroupInfo:
        """Add members to a group (``group:<id>`` or name)."""
        ...

    async def remove_members(self, group: str, members: list[str]) -> GroupInfo:
        """Remove members from a group (keys are rotated)."""
        ...

    async def leave_group(self, group: str) -> None:
        """Leave a group (the others rotate their keys)."""
        ...

    async def connect(self) -> None:
        """Go online and start receiving (events from now on reach :meth:`events`)."""
        ...

    def events(self) -> AsyncIterator[Event]:
        """Decrypted messages, receipts, typing, key changes, group changes, failures."""
        ...


class SdkBackend:
    """:class:`ChatBackend` over :class:`clients.sdk.VoxClient` (the SDK's asyncio shell).

    The conversation list reads the client's known peers (``client.store.list_peers()``, read
    only) for contacts and their trust state, and each conversation's disappearing timer
    (:func:`clients.sdk.message_ops.timer`); everything else is the client's public API.
    """

    def __init__(self, client: VoxClient) -> None:
        self.client = client
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._unsubscribe: Callable[[], None] | None = None

    @property
    def username(self) -> str:
        return self.client.username

    @property
    def home(self) -> Path | None:
        """The profile directory (``/save`` writes to its ``downloads`` folder)."""
        return self.client.home

    @property
    def connected(self) -> bool:
        """Whether the client's WebSocket is up."""
        return self.client.connected

    @property
    def device_id(self) -> int:
        return self.client.device_id

    async def server_config(self) -> ServerConfig:
        return await self.client.config()

    async def conversation_list(self) -> list[ConversationItem]:
        me = self.client.username
        peers = {p.username: p for p in self.client.store.list_peers() if p.username != me}
        groups = {g.conversation: g for g in self.client.groups()}
        items: dict[str, ConversationItem] = {}

        def add(conversation: str, unread: int = 0) -> None:
            if conversation in items or conversation == me:
                return
            group = groups.get(conversation)
            peer = peers.get(conversation)
            items[conversation] = ConversationItem(
                conversation,
                group.name if group else conversation,
                unread,
                is_group=is_group_conversation(conversation),
                key_changed=peer is not None and peer.trust is TrustState.CHANGED,
                timer=timer(self.client.store, conversation),
            )

        for summary in self.client.conversations():
            add(summary.conversation, summary.unread)
        for conversation in groups:
            add(conversation)
        for username in sorted(peers):
            add(username)
        return list(items.values())

    async def history(self, conversation: str, limit: int = 200) -> list[Message]:
        return self.client.history(conversation, limit=limit)

    async def mark_read(self, conversation: str) -> None:
        await self.client.mark_read(conversation)

    async def send_text(self, conversation: str, text: str) -> str:
        return (await self.client.send_text(conversation, text)).id

    async def send_file(
        self, conversation: str, path: Path, progress: Callable[[int, int], None] | None = None
    ) -> str:
        return (await self.client.send_file(conversation, path, progress=progress)).id

    async def send_typing(self, conversation: str, active: bool) -> None:
        await self.client.send_typing(conversation, active)

    async def reply(self, conversation: str, message_id: str, text: str) -> str:
        return (await self.client.reply(conversation, message_id, text)).id

    async def edit(self, conversation: str, message_id: str, text: str) -> None:
        await self.client.edit(conversation, message_id, text)

    async def delete(
        self, conversation: str, message_id: str, *, for_me: bool = False
    ) -> Withdrawn | None:
        deleted = await self.client.delete(conversation, message_id, for_me=for_me)
        return deleted if isinstance(deleted, Withdrawn) else None

    async def react(
        self, conversation: str, message_id: str, emoji: str, *, remove: bool = False
    ) -> None:
        await self.client.react(conversation, message_id, emoji, remove=remove)

    async def set_timer(self, conversation: str, seconds: int) -> None:
        await self.client.set_timer(conversation, seconds)

    async def search(self, query: str, limit: int = 50) -> list[Message]:
        return self.client.search(query, limit=limit)

    async def verify(self, username: str) -> Verification:
        return await self.client.verify(username)

    async def accept_identity(self, username: str) -> Verification:
        return await self.client.accept_key(username)

    async def clear_identity(self, username: str) -> Verification:
        return await self.client.clear_verification(username)

    async def groups(self) -> list[GroupInfo]:
        return self.client.groups()

    async def download(
        self, message: Message, dest: Path, progress: Callable[[int, int], None] | None = None
    ) -> Path:
        return await self.client.download(message, dest, progress=progress)

    async def create_group(self, name: str, members: list[str]) -> GroupInfo:
        return await self.client.create_group(name, members)

    async def add_members(self, group: str, members: list[str]) -> GroupInfo:
        return await self.client.add_members(group, members)

    async def remove_members(self, group: str, members: list[str]) -> GroupInfo:
        return await self.client.remove_members(group, members)

    async def leave_group(self, group: str) -> None:
        await self.client.leave_group(group)

    async def connect(self) -> None:
        """Subscribe, then connect with receiving on, so no event is missed in between."""
        if self._unsubscribe is None:
            self._unsubscribe = self.client.on_event(self._queue.put_nowait)
        # Start from a clean state: a send-only connection (opened by an earlier send) does not
        # receive, and a client still retrying an old connection would only time out.
        await self.client.disconnect()
        try:
            await self.client.connect(receive=True)
        except TimeoutError:
            await self.client.disconnect()
            raise RelayUnavailable(self.client.server_url, "timed out") from None
        except ClientError:
            await self.client.disconnect()
            raise

    async def events(self) -> AsyncIterator[Event]:
        """Events since :meth:`connect`, until the TUI stops iterating."""
        try:
            while True:
                yield await self._queue.get()
        finally:
            if self._unsubscribe is not None:
                self._unsubscribe()
                self._unsubscribe = None
