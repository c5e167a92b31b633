"""``vox daemon``: one process holds the profile and serves JSON-RPC 2.0 on a Unix socket.

The socket is ``HOME/vox.sock`` (mode 0600: only the profile's owner may connect). Every
connection may send requests (one JSON object per line) and, after ``subscribe``, receives
every event as an ``event`` notification. A request runs to its end even when its connection
goes away (a send is not half-done because a script was killed); a malformed request gets a
JSON-RPC error and changes nothing. The methods are listed in ``docs/daemon.md`` and in
:attr:`Daemon.methods`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from clients.daemon import jsonrpc as rpc
from clients.daemon.codec import (
    device_json,
    event_json,
    group_json,
    message_json,
    operation_json,
    result_json,
    verification_json,
    withdrawn_json,
)
from clients.sdk import VoxClient
from clients.sdk.errors import ClientError, MessageQueued
from clients.sdk.models import Event, SendResult, Withdrawn
from clients.sdk.protocol import message_from_stored
from crypto.errors import VoxError

__all__ = ["SOCKET_NAME", "Daemon", "DaemonRunning", "socket_path"]

log = logging.getLogger("vox.daemon")

SOCKET_NAME = "vox.sock"

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


def socket_path(home: Path) -> Path:
    """Where a profile's daemon listens."""
    return home / SOCKET_NAME


class DaemonRunning(ClientError):
    """Another daemon (or ``vox chat``) already serves this profile."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"a vox daemon is already running for this profile ({path})")
        self.path = path


async def is_live(path: Path) -> bool:
    """Whether something accepts connections on ``path``."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 2.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def _str(params: dict[str, Any], name: str) -> str:
    value = params.get(name)
    if not isinstance(value, str) or not value:
        raise rpc.RpcError(rpc.INVALID_PARAMS, f"invalid params: {name!r} must be a string")
    return value


def _names(params: dict[str, Any], name: str = "members") -> list[str]:
    value = params.get(name)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise rpc.RpcError(
            rpc.INVALID_PARAMS, f"invalid params: {name!r} must be a list of strings"
        )
    return value


def _int(params: dict[str, Any], name: str, default: int | None = None) -> int:
    value = params.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise rpc.RpcError(rpc.INVALID_PARAMS, f"invalid params: {name!r} must be an integer")
    return value


class _Connection:
    """One connected client: serialised writes, an optional event subscription."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.lock = asyncio.Lock()
        self.subscribed = False
        self.open = True

    async def write(self, data: bytes) -> None:
        if not self.open:
            return
        async with self.lock:
            try:
                self.writer.write(data)
                await self.writer.drain()
            except (ConnectionError, OSError):
                self.open = False  # gone: the call already ran; the answer has nowhere to go


class Daemon:
    """Serve ``client`` (an open, connected :class:`VoxClient`) on ``path``."""

    def __init__(self, client: VoxClient, path: Path) -> None:
        self.client = client
        self.path = path
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._unsubscribe: Callable[[], None] | None = None
        c = client
        self.methods: dict[str, Handler] = {
            "whoami": lambda p: self._whoami(),
            "config": lambda p: self._config(),
            "conversation_list": lambda p: self._conversation_list(),
            "status": lambda p: self._status(),
            "send": lambda p: self._send(p),
            "send_file": lambda p: self._send_file(p),
            "typing": lambda p: c.send_typing(_str(p, "to"), bool(p.get("active", True))),
            "mark_read": lambda p: c.mark_read(
                _str(p, "conversation"), ids=_names(p, "ids") if "ids" in p else None
            ),
            "history": lambda p: self._history(p),
            "conversations": lambda p: self._conversations(),
            "contacts": lambda p: self._contacts(),
            "verify": lambda p: self._verify(p),
            "devices": lambda p: self._devices(),
            "unlink": lambda p: c.remove_device(_int(p, "device_id")),
            "link": lambda p: self._link(),
            "wait_linked": lambda p: self._wait_linked(p),
            "download": lambda p: self._download(p),
            "groups": lambda p: self._groups(),
            "group_create": lambda p: self._group(c.create_group(_str(p, "name"), _names(p))),
            "group_add": lambda p: self._group(c.add_members(_str(p, "group"), _names(p))),
            "group_remove": lambda p: self._group(c.remove_members(_str(p, "group"), _names(p))),
            "group_leave": lambda p: c.leave_group(_str(p, "group")),
            "edit": lambda p: self._op(c.edit(_str(p, "to"), _str(p, "id"), _str(p, "text"))),
            "delete": lambda p: self._delete(p),
            "react": lambda p: self._op(
                c.react(
                    _str(p, "to"),
                    _str(p, "id"),
                    str(p.get("emoji", "")),
                    remove=bool(p.get("remove", False)),
                )
            ),
            "reply": lambda p: self._op(c.reply(_str(p, "to"), _str(p, "id"), _str(p, "text"))),
            "set_timer": lambda p: self._op(c.set_timer(_str(p, "to"), _int(p, "seconds"))),
            "search": lambda p: self._search(p),
        }

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Listen (refusing when another daemon serves the profile)."""
        if await is_live(self.path):
            raise DaemonRunning(self.path)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a stale socket of a daemon that died
        old = os.umask(0o177)  # the socket is created 0600, never briefly wider
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=rpc.MAX_LINE
            )
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        self._unsubscribe = self.client.on_event(self.on_event)

    async def close(self) -> None:
        """Stop listening, let running calls finish (briefly), remove the socket."""
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            conn.open = False
            conn.writer.close()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5.0)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    # --- connections ---------------------------------------------------------------------

    async def serve_stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Serve one connection (a socket client, or stdin/stdout for ``vox jsonrpc``) until
        it ends; calls still running then are finished and answered first."""
        await self._serve(reader, writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection(writer)
        self._connections.add(conn)
        mine: set[asyncio.Task[None]] = set()
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):  # a line over MAX_LINE
                    err = rpc.RpcError(rpc.INVALID_REQUEST, "request too large")
                    await conn.write(rpc.error(None, err))
                    break
                except (ConnectionError, OSError):
                    break
                if not line:
                    break
                if line.strip():
                    task = asyncio.create_task(self._handle(conn, line))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                    mine.add(task)
                    task.add_done_callback(mine.discard)
            if mine:  # the client finished writing (EOF): answer what it asked first
                await asyncio.wait(set(mine))
        finally:
            conn.open = False
            self._connections.discard(conn)
            writer.close()

    async def _handle(self, conn: _Connection, line: bytes) -> None:
        request_id: rpc.Id = None
        try:
            request = rpc.parse_request(line)
            request_id = request.id
            value: Any
            if request.method in ("subscribe", "unsubscribe"):
                conn.subscribed = request.method == "subscribe"
                value = {"subscribed": conn.subscribed}
            else:
                handler = self.methods.get(request.method)
                if handler is None:
                    raise rpc.RpcError(rpc.METHOD_NOT_FOUND, f"method not found: {request.method}")
                value = await handler(request.params)
            if request_id is not None:
                await conn.write(rpc.result(request_id, value))
        except rpc.RpcError as exc:
            if exc.data is not None and "id" in exc.data:
                request_id = exc.data.pop("id")
                exc.data = exc.data or None
            await conn.write(rpc.error(request_id, exc))
        except MessageQueued as exc:
            data = {"type": "MessageQueued", "id": exc.message_id}
            await conn.write(rpc.error(request_id, rpc.RpcError(rpc.QUEUED, str(exc), data)))
        except ClientError as exc:
            data = {"type": type(exc).__name__}
            await conn.write(rpc.error(request_id, rpc.RpcError(rpc.CLIENT_ERROR, str(exc), data)))
        except Exception as exc:  # never take the daemon down
            log.exception("daemon method failed")
            err = rpc.RpcError(rpc.INTERNAL_ERROR, f"internal error: {type(exc).__name__}")
            await conn.write(rpc.error(request_id, err))

    def on_event(self, event: Event) -> None:
        """Notify every subscribed connection of ``event``."""
        data = rpc.notification("event", event_json(event))
        for conn in list(self._connections):
            if conn.subscribed and conn.open:
                task = asyncio.ensure_future(conn.write(data))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    # --- methods -------------------------------------------------------------------------

    async def _whoami(self) -> dict[str, Any]:
        c = self.client
        return {"username": c.username, "device_id": c.device_id, "server": c.server_url}

    async def _config(self) -> dict[str, Any]:
        return dataclasses.asdict(await self.client.config())

    async def _conversation_list(self) -> list[dict[str, Any]]:
        from clients.tui.backend import SdkBackend

        items = await SdkBackend(self.client).conversation_list()
        return [dataclasses.asdict(item) for item in items]

    async def _status(self) -> dict[str, Any]:
        from clients.sdk.content import decode_content
        from clients.sdk.messaging import describe

        queued = []
        for e in self.client.outbox.pending():
            try:
                kind, target = describe(decode_content(e.payload))
            except VoxError:  # never sent (the outbox drops it when it loads)
                continue
            queued.append({"id": e.message_id, "conversation": e.conversation,
                           "attempts": e.attempts, "kind": kind, "target": target,
                           "state": "queued"})  # fmt: skip
        failed = [operation_json(op) for op in self.client.operations() if op.state == "failed"]
        return {
            **(await self._whoami()),
            "connected": self.client.connected,
            "queued": queued,
            "failed": failed,
        }

    async def _send(self, p: dict[str, Any]) -> dict[str, Any]:
        mid = p.get("message_id")
        if mid is not None and not isinstance(mid, str):
            raise rpc.RpcError(rpc.INVALID_PARAMS, "invalid params: 'message_id' must be a string")
        return result_json(
            await self.client.send_text(_str(p, "to"), _str(p, "text"), message_id=mid)
        )

    async def _send_file(self, p: dict[str, Any]) -> dict[str, Any]:
        caption = p.get("caption", "")
        if not isinstance(caption, str):
            raise rpc.RpcError(rpc.INVALID_PARAMS, "invalid params: 'caption' must be a string")
        path = Path(_str(p, "path"))
        if not path.is_absolute():  # the daemon's working directory is not the caller's
            raise rpc.RpcError(rpc.INVALID_PARAMS, "invalid params: 'path' must be absolute")
        return result_json(await self.client.send_file(_str(p, "to"), path, caption=caption))

    @staticmethod
    async def _op(work: Awaitable[SendResult | None]) -> dict[str, Any] | None:
        result = await work
        return None if result is None else result_json(result)

    async def _delete(self, p: dict[str, Any]) -> dict[str, Any] | None:
        for_me = bool(p.get("for_me", False))
        result = await self.client.delete(_str(p, "to"), _str(p, "id"), for_me=for_me)
        if isinstance(result, Withdrawn):
            return withdrawn_json(result)
        return None if result is None else result_json(result)

    async def _search(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        chat = p.get("chat")
        if chat is not None and not isinstance(chat, str):
            raise rpc.RpcError(rpc.INVALID_PARAMS, "invalid params: 'chat' must be a string")
        found = self.client.search(_str(p, "query"), chat=chat, limit=_int(p, "limit", 50))
        return [message_json(m) for m in found]

    async def _history(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        limit = _int(p, "limit", 100)
        return [message_json(m) for m in self.client.history(_str(p, "conversation"), limit=limit)]

    async def _conversations(self) -> list[dict[str, Any]]:
        return [
            {"conversation": s.conversation, "unread": s.unread, "messages": s.messages}
            for s in self.client.conversations()
        ]

    async def _contacts(self) -> list[dict[str, Any]]:
        return [
            {"username": p.username, "trust": str(p.trust)} for p in self.client.store.list_peers()
        ]

    async def _verify(self, p: dict[str, Any]) -> dict[str, Any]:
        username = _str(p, "username")
        if p.get("accept") is True and p.get("clear") is True:
            raise rpc.RpcError(rpc.INVALID_PARAMS, "accept and clear exclude each other")
        if p.get("accept") is True:
            return verification_json(await self.client.accept_key(username))
        if p.get("clear") is True:
            return verification_json(await self.client.clear_verification(username))
        return verification_json(await self.client.verify(username))

    async def _devices(self) -> list[dict[str, Any]]:
        return [device_json(d) for d in await self.client.devices()]

    async def _link(self) -> dict[str, Any]:
        inv = await self.client.link()
        return {"code": inv.code, "device_id": inv.device_id, "list_version": inv.list_version}

    async def _wait_linked(self, p: dict[str, Any]) -> dict[str, Any]:
        from clients.sdk.linking import LinkInvitation

        inv = LinkInvitation(_str(p, "code"), _int(p, "device_id"), _int(p, "list_version"))
        within = p.get("within", 300.0)
        if not isinstance(within, int | float) or isinstance(within, bool):
            raise rpc.RpcError(rpc.INVALID_PARAMS, "invalid params: 'within' must be a number")
        return {"device_id": await self.client.wait_linked(inv, float(within))}

    async def _download(self, p: dict[str, Any]) -> dict[str, Any]:
        stored = self.client.store.get_message(_str(p, "message_id"))
        if stored is None:
            raise rpc.RpcError(rpc.INVALID_PARAMS, "invalid params: no such message")
        dest = Path(_str(p, "dest"))
        if not dest.is_absolute():
            raise rpc.RpcError(rpc.INVALID_PARAMS, "invalid params: 'dest' must be absolute")
        path = await self.client.download(message_from_stored(stored), dest)
        return {"path": str(path)}

    async def _groups(self) -> list[dict[str, Any]]:
        return [group_json(g) for g in self.client.groups()]

    async def _group(self, change: Awaitable[Any]) -> dict[str, Any]:
        return group_json(await change)
