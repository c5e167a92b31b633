"""A client of ``vox daemon``: JSON-RPC 2.0 over the profile's Unix socket.

``vox`` commands use it when a daemon (or ``vox chat``) holds the profile, so they work while
the TUI is open. Errors come back as SDK exceptions: a queued message as
:class:`~clients.sdk.errors.MessageQueued`, any other SDK failure as :class:`RemoteError`
(a :class:`~clients.sdk.errors.ClientError` whose ``kind`` names the daemon-side class).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

from clients.daemon import jsonrpc as rpc
from clients.daemon.codec import event_from_json, message_from_json
from clients.sdk.errors import ClientError, GroupError, MessageQueued
from clients.sdk.linking import LinkInvitation
from clients.sdk.models import (
    DeviceInfo,
    Event,
    GroupInfo,
    Message,
    SendResult,
    Verification,
    Withdrawn,
)

__all__ = ["RemoteApi", "RemoteClient", "RemoteError"]


class RemoteError(ClientError):
    """The daemon answered with an error; ``kind`` is the SDK error class name (if any)."""

    def __init__(self, message: str, code: int, kind: str | None) -> None:
        super().__init__(message)
        self.code = code
        self.kind = kind


class RemoteClient:
    """One connection to a daemon."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._gone = False  # the connection ended: calls fail at once
        self._task = asyncio.create_task(self._read(), name="vox-rpc-reader")

    @classmethod
    async def connect(cls, path: Path) -> RemoteClient:
        """Connect to the daemon listening on ``path`` (raises ``OSError`` if none)."""
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(str(path), limit=rpc.MAX_LINE), 5.0
        )
        return cls(reader, writer)

    async def close(self) -> None:
        """Close the connection."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    async def __aenter__(self) -> RemoteClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def call(self, method: str, **params: Any) -> Any:
        """Call ``method`` with named ``params``; returns its result or raises."""
        if self._gone:  # nothing would ever answer
            raise ClientError("the vox daemon closed the connection")
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        request = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        try:
            self._writer.write(rpc.encode(request))
            await self._writer.drain()
        except (ConnectionError, OSError):  # the daemon went away: the SDK's error, not OSError
            self._pending.pop(request_id, None)
            raise ClientError("the vox daemon closed the connection") from None
        return await future

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Subscribe, then yield every event (``kind`` and fields, see ``docs/daemon.md``)."""
        await self.call("subscribe")
        while (event := await self._events.get()) is not None:
            yield event

    async def _read(self) -> None:
        try:
            while line := await self._reader.readline():
                message = json.loads(line)
                if "id" not in message or message.get("method"):
                    self._events.put_nowait(message.get("params", {}))
                    continue
                future = self._pending.pop(message["id"], None)
                if future is None or future.done():
                    continue
                if "error" in message:
                    future.set_exception(_error(message["error"]))
                else:
                    future.set_result(message.get("result"))
        except (OSError, ValueError):
            pass
        finally:
            self._gone = True
            gone = ClientError("the vox daemon closed the connection")
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(gone)
            self._pending.clear()
            self._events.put_nowait(None)


def _error(body: dict[str, Any]) -> ClientError:
    code = int(body.get("code", rpc.INTERNAL_ERROR))
    message = str(body.get("message", "error"))
    data = body.get("data") or {}
    if code == rpc.QUEUED:
        return MessageQueued(str(data.get("id", "")), "", message, text=message)
    return RemoteError(message, code, data.get("type"))


class RemoteApi:
    """The part of :class:`~clients.sdk.VoxClient` the ``vox`` commands use, served by a
    daemon: same method names, same return types."""

    def __init__(self, rpc_client: RemoteClient, me: dict[str, Any]) -> None:
        self.rpc = rpc_client
        self.username = str(me["username"])
        self.device_id = int(me["device_id"])
        self.server_url = str(me["server"])

    @classmethod
    async def connect(cls, path: Path) -> RemoteApi:
        """Connect and learn who the daemon serves."""
        client = await RemoteClient.connect(path)
        try:
            return cls(client, await client.call("whoami"))
        except BaseException:
            await client.close()
            raise

    async def close(self) -> None:
        """Close the connection (the daemon keeps running)."""
        await self.rpc.close()

    async def send_text(self, to: str, text: str, *, message_id: str | None = None) -> SendResult:
        """See :meth:`VoxClient.send_text`."""
        return _result(await self.rpc.call("send", to=to, text=text, message_id=message_id))

    async def send_file(self, to: str, path: Path | str, *, caption: str = "",
                        progress: object = None) -> SendResult:  # fmt: skip
        """See :meth:`VoxClient.send_file` (no progress over the daemon)."""
        absolute = os.path.join(os.getcwd(), path)
        return _result(await self.rpc.call("send_file", to=to, path=absolute, caption=caption))

    async def send_group_text(self, group: str, text: str) -> SendResult:
        """See :meth:`VoxClient.send_group_text`."""
        info = await self._resolve(group)
        return await self.send_text(info.conversation, text)

    async def send_group_file(self, group: str, path: Path | str, *,
                              progress: object = None) -> SendResult:  # fmt: skip
        """See :meth:`VoxClient.send_group_file`."""
        info = await self._resolve(group)
        return await self.send_file(info.conversation, path)

    async def verify(self, username: str) -> Verification:
        """See :meth:`VoxClient.verify`."""
        return Verification(**await self.rpc.call("verify", username=username))

    async def accept_key(self, username: str) -> Verification:
        """See :meth:`VoxClient.accept_key`."""
        return Verification(**await self.rpc.call("verify", username=username, accept=True))

    async def clear_verification(self, username: str) -> Verification:
        """See :meth:`VoxClient.clear_verification`."""
        return Verification(**await self.rpc.call("verify", username=username, clear=True))

    async def devices(self) -> list[DeviceInfo]:
        """See :meth:`VoxClient.devices`."""
        return [
            DeviceInfo(d["device_id"], d["identity_key"], d["current"])
            for d in await self.rpc.call("devices")
        ]

    async def remove_device(self, device_id: int) -> None:
        """See :meth:`VoxClient.remove_device`."""
        await self.rpc.call("unlink", device_id=device_id)

    async def link(self) -> LinkInvitation:
        """See :meth:`VoxClient.link`."""
        answer = await self.rpc.call("link")
        return LinkInvitation(answer["code"], answer["device_id"], answer["list_version"])

    async def wait_linked(self, invitation: LinkInvitation, within: float = 300.0) -> int:
        """See :meth:`VoxClient.wait_linked`."""
        answer = await self.rpc.call(
            "wait_linked",
            code=invitation.code,
            device_id=invitation.device_id,
            list_version=invitation.list_version,
            within=within,
        )
        return int(answer["device_id"])

    async def list_groups(self) -> list[GroupInfo]:
        """See :meth:`VoxClient.groups`."""
        return [_group(g) for g in await self.rpc.call("groups")]

    async def create_group(self, name: str, members: Iterable[str]) -> GroupInfo:
        """See :meth:`VoxClient.create_group`."""
        return _group(await self.rpc.call("group_create", name=name, members=list(members)))

    async def add_members(self, group: str, members: Iterable[str]) -> GroupInfo:
        """See :meth:`VoxClient.add_members`."""
        return _group(await self.rpc.call("group_add", group=group, members=list(members)))

    async def remove_members(self, group: str, members: Iterable[str]) -> GroupInfo:
        """See :meth:`VoxClient.remove_members`."""
        return _group(await self.rpc.call("group_remove", group=group, members=list(members)))

    async def leave_group(self, group: str) -> None:
        """See :meth:`VoxClient.leave_group`."""
        await self.rpc.call("group_leave", group=group)

    async def download(self, message: Message, dest: Path | str) -> Path:
        """See :meth:`VoxClient.download` (the daemon writes the file)."""
        absolute = os.path.join(os.getcwd(), dest)
        answer = await self.rpc.call("download", message_id=message.id, dest=absolute)
        return Path(answer["path"])

    async def events(self) -> AsyncIterator[Event]:
        """Every event the daemon sees from now on."""
        async for value in self.rpc.events():
            event = event_from_json(value)
            if event is not None:
                yield event

    async def edit(self, target: str, message_id: str, text: str) -> SendResult | None:
        """See :meth:`VoxClient.edit`."""
        return _maybe(await self.rpc.call("edit", to=target, id=message_id, text=text))

    async def delete(self, target: str, message_id: str, *, for_me: bool = False
                     ) -> SendResult | Withdrawn | None:  # fmt: skip
        """See :meth:`VoxClient.delete`."""
        answer = await self.rpc.call("delete", to=target, id=message_id, for_me=for_me)
        if answer is not None and answer.get("withdrawn"):
            return Withdrawn(answer["id"], answer.get("timer"))
        return _maybe(answer)

    async def react(self, target: str, message_id: str, emoji: str, *, remove: bool = False
                    ) -> SendResult | None:  # fmt: skip
        """See :meth:`VoxClient.react`."""
        answer = await self.rpc.call("react", to=target, id=message_id, emoji=emoji, remove=remove)
        return _maybe(answer)

    async def reply(self, target: str, message_id: str, text: str) -> SendResult:
        """See :meth:`VoxClient.reply`."""
        return _result(await self.rpc.call("reply", to=target, id=message_id, text=text))

    async def set_timer(self, target: str, seconds: int) -> SendResult | None:
        """See :meth:`VoxClient.set_timer`."""
        return _maybe(await self.rpc.call("set_timer", to=target, seconds=seconds))

    async def search(self, query: str, *, chat: str | None = None, limit: int = 50
                     ) -> list[Message]:  # fmt: skip
        """See :meth:`VoxClient.search`."""
        found = await self.rpc.call("search", query=query, chat=chat, limit=limit)
        return [message_from_json(m) for m in found]

    async def mark_read(self, conversation: str, *, ids: Iterable[str] | None = None) -> int:
        """See :meth:`VoxClient.mark_read`."""
        params: dict[str, Any] = {"conversation": conversation}
        if ids is not None:
            params["ids"] = list(ids)
        return int(await self.rpc.call("mark_read", **params))

    async def history(self, conversation: str, *, limit: int = 100) -> list[Message]:
        """See :meth:`VoxClient.history`."""
        found = await self.rpc.call("history", conversation=conversation, limit=limit)
        return [message_from_json(m) for m in found]

    async def status(self) -> dict[str, Any]:
        """Who, connected, queued messages."""
        answer: dict[str, Any] = await self.rpc.call("status")
        return answer

    async def _resolve(self, group: str) -> GroupInfo:
        key = group.removeprefix("group:")
        groups = await self.list_groups()
        for info in groups:
            if info.group_id == key:
                return info
        named = [info for info in groups if info.name in (group, key)]
        if len(named) == 1:
            return named[0]
        if named:
            raise GroupError(f"several groups are named {group!r}; use the id")
        raise GroupError(f"unknown group {group!r}")


def _maybe(value: dict[str, Any] | None) -> SendResult | None:
    return None if value is None else _result(value)


def _result(value: dict[str, Any]) -> SendResult:
    return SendResult(value["id"], value["accepted_at"], value["devices"])


def _group(value: dict[str, Any]) -> GroupInfo:
    return GroupInfo(value["id"], value["name"], tuple(value["members"]), value["epoch"])
