"""``/v1/ws``: authenticate with the first frame, then read frames until the socket closes.

The route is thin: protocol errors are mapped to close codes here, everything else is the
service's (:mod:`server.delivery.service`) and the connection's
(:mod:`server.delivery.connection`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from fastapi import APIRouter, WebSocket
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketState

from server.auth.service import AuthenticatedDevice, authenticate_token
from server.delivery.budgets import Budget
from server.delivery.connection import DeviceConnection, sansio_protocol_of
from server.delivery.frames import (
    AckIn,
    ClientFrame,
    FrameError,
    SendIn,
    dumps,
    parse_client_frame,
    parse_frame,
    parse_json,
)
from server.delivery.service import DeliveryService
from server.delivery.writer import Sender
from server.edge.connections import PRE_AUTH_MAX_BYTES, Tracked
from server.errors import RateLimited, Unauthorized
from server.state import relay_state
from wire.codes import CloseCode
from wire.frames import AuthFrame

__all__ = ["WebSocketFastPath", "router"]

log = logging.getLogger("vox.delivery")

router = APIRouter()


#: ``error`` codes that mean "this client sends frames it should not": each one is charged to
#: the device's invalid-frame budget (``busy``, ``queue_full``, ``mismatch``... are not).
INVALID_FRAME_CODES = frozenset(
    {
        "bad_frame",
        "unknown_type",
        "bad_base64",
        "too_large",
        "too_many_recipients",
        "duplicate_recipient",
        "bad_recipient",
    }
)


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    if ws.application_state == WebSocketState.CONNECTED:
        await ws.close(code, reason)


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


async def _charge(budget: Budget, key: Hashable, cost: float = 1.0) -> None:
    """Spend from ``budget`` (raises ``RateLimited``); awaits only to refill a shared lease."""
    if not budget.take(key, cost):
        await budget.spend(key, cost)


async def _authenticate(ws: WebSocket, service: DeliveryService) -> AuthenticatedDevice | None:
    """Read and check the ``auth`` frame; close the socket and return None on failure."""
    try:
        message = await asyncio.wait_for(ws.receive(), timeout=service.config.auth_timeout)
    except TimeoutError:
        await _close(ws, CloseCode.UNAUTHORIZED, "no auth frame in time")
        return None
    if message["type"] == "websocket.disconnect":
        return None
    text = message.get("text")
    if text is None:
        await _close(ws, CloseCode.UNAUTHORIZED, "first frame must be a text auth frame")
        return None
    if _utf8_len(text) > PRE_AUTH_MAX_BYTES:
        await _close(ws, CloseCode.TOO_LARGE, "frame too large")
        return None
    try:
        frame = parse_client_frame(parse_json(text))
    except FrameError as exc:
        await _close(ws, CloseCode.UNAUTHORIZED, f"first frame must be auth ({exc.code})")
        return None
    if not isinstance(frame, AuthFrame):
        await _close(ws, CloseCode.UNAUTHORIZED, "first frame must be auth")
        return None
    try:
        async with relay_state(ws.app).sessions() as session:
            return await authenticate_token(session, frame.token, now=service.clock.now())
    except Unauthorized as exc:
        await _close(ws, CloseCode.UNAUTHORIZED, exc.code)
        return None


async def _admit(ws: WebSocket, service: DeliveryService, tracked: Tracked | None) -> bool:
    """Connection-level checks before the ``auth`` frame (close and return False on refusal)."""
    if not service.accepting:
        await _close(ws, CloseCode.GOING_AWAY, "server shutting down")
        return False
    client = ws.scope.get("client")
    address = str(client[0]) if client else "unknown"
    if tracked is not None and tracked.guard is not None:
        if tracked.operator:
            await _close(ws, CloseCode.POLICY, "not on the operator listener")
            return False
        if tracked.reserve_only:
            tracked.guard.refused["reserve"] += 1
            await _close(ws, CloseCode.TRY_AGAIN_LATER, "relay at its connection limit")
            return False
        if not tracked.guard.rekey(tracked, address):
            await _close(ws, CloseCode.RATE_LIMITED, "too many connections from this address")
            return False
    try:
        await _charge(service.budgets.connects_by_address, address)
    except RateLimited:
        await _close(ws, CloseCode.RATE_LIMITED, "too many connection attempts")
        return False
    return True


@router.websocket("/v1/ws")
async def websocket_endpoint(ws: WebSocket) -> None:
    """One device's messaging connection (``docs/protocol-ws.md``)."""
    service = relay_state(ws.app).delivery
    budgets = service.budgets
    tracked: Tracked | None = ws.scope.get("vox.connection")
    await ws.accept()
    if not await _admit(ws, service, tracked):
        return
    device = await _authenticate(ws, service)
    if device is None:
        return
    try:
        await _charge(budgets.connects_by_device, device.device_pk)
    except RateLimited:
        await _close(ws, CloseCode.RATE_LIMITED, "too many connection attempts")
        return
    if tracked is not None and tracked.guard is not None and not tracked.guard.promote(tracked):
        await _close(ws, CloseCode.RATE_LIMITED, "too many connections from this address")
        return
    protocol = sansio_protocol_of(ws)
    if protocol is not None and hasattr(protocol, "authenticated"):
        protocol.authenticated()  # frames up to max_frame_bytes from now on
    sender = Sender(device.device_pk, device.username, device.device_id)
    conn = DeviceConnection(ws, sender, service, token_id=device.token_id)
    await service.hub.attach(sender.device_pk, conn)  # replaced at once: conn is closing
    if not service.accepting:  # shutting down while the attach waited for Redis
        conn.close(CloseCode.GOING_AWAY, "server shutting down")
    cfg = service.config
    loop = asyncio.get_running_loop()
    expiry = loop.call_later(
        max(0.0, device.expires_at - service.clock.now()),
        conn.close,
        CloseCode.UNAUTHORIZED,
        "token_expired",
    )
    conn.push_frame(
        dumps(
            {
                "type": "ready",
                "user": sender.user,
                "device": sender.device_id,
                "limits": {
                    "max_frame_bytes": cfg.max_frame_bytes,
                    "max_ciphertext_bytes": cfg.max_ciphertext_bytes,
                    "max_recipients": cfg.max_recipients,
                    "max_inflight": cfg.max_inflight,
                    "max_pending_sends": cfg.max_pending_sends,
                    "messages_per_second": cfg.messages_per_second,
                },
            }
        )
    )
    conn.wake()  # (re)deliver whatever is queued
    reader = _FrameReader(conn, service, device.device_pk, device.account_id)
    # On uvicorn's sans-I/O protocol (ours) messages are handed to ``reader.frame`` as they
    # are parsed, in ``data_received`` (``GuardedWebSocketProtocol.hand_frames_to``): no
    # queue, no wake-up of this task per message. This task then only sees what the handler
    # left to finish asynchronously (a shared budget's lease to refill), messages that came
    # while it did, and the disconnect.
    direct = protocol is not None and hasattr(protocol, "hand_frames_to")
    if direct:
        protocol.hand_frames_to(reader.frame)
    # uvicorn's own receive when it serves the socket: Starlette's wrapper only re-checks the
    # message type (uvicorn sends nothing else) and tracks a state nothing reads after this.
    receive = protocol.receive if protocol is not None else ws.receive
    try:
        while True:
            if direct:
                protocol.resume_handler()  # only once nothing queued is left
            message = await receive()
            kind = message["type"]
            if kind == "websocket.disconnect":
                break
            if kind == "vox.pending":
                await message["pending"]
                continue
            if kind == "vox.error":
                raise message["error"]
            text = message.get("text")
            size = _utf8_len(text) if text is not None else len(message.get("bytes") or b"")
            pending = reader.frame(text, size)
            if pending is not None:
                await pending
    finally:
        if direct:
            protocol.hand_frames_to(None)
        expiry.cancel()
        service.hub.detach(sender.device_pk, conn)
        conn.shutdown()
        budgets.forget(device.device_pk, device.account_id)


class _FrameReader:
    """The frames of one authenticated connection, each handled synchronously as far as it
    can be: every step returns ``None`` when the frame is done, or an awaitable that finishes
    it (only a shared budget whose local lease is spent needs one: a round trip to Redis).

    Order of the work, as documented (``server/delivery/budgets.py``): the frame count and
    byte budgets are charged before anything looks inside the frame; then binary and oversized
    frames close the connection; then the frame is parsed, a ``send`` is charged to the
    device's and the account's send budgets, and the service handles it. A refused frame is
    charged to the invalid-frame budget and answered with an ``error``. The clock is read once
    per frame (``now``, handed from step to step; ``None`` after a wait: read it again).
    """

    __slots__ = ("_account", "_budgets", "_clock", "_conn", "_max_frame_bytes", "_pk", "_service")

    def __init__(
        self, conn: DeviceConnection, service: DeliveryService, pk: int, account: int
    ) -> None:
        self._conn = conn
        self._service = service
        self._budgets = service.budgets
        self._clock = service.clock
        self._max_frame_bytes = service.config.max_frame_bytes
        self._pk = pk
        self._account = account

    def frame(self, text: str | None, size: int) -> Awaitable[None] | None:
        """One message (``text`` ``None``: a binary one) of ``size`` bytes."""
        if self._conn.closing:
            return None
        now = self._clock.monotonic()
        return self._charge(self._budgets.frames, self._pk, 1.0, now, self._sized, text, size)

    def _sized(self, now: float | None, text: str | None, size: int) -> Awaitable[None] | None:
        budget = self._budgets.frame_bytes
        return self._charge(budget, self._pk, size, now, self._parse, text, size)

    def _parse(self, now: float | None, text: str | None, size: int) -> Awaitable[None] | None:
        conn = self._conn
        if text is None:
            conn.close(CloseCode.BAD_FRAME, "binary frames are not supported; send JSON text")
            return None
        if size > self._max_frame_bytes:
            conn.close(CloseCode.TOO_LARGE, "frame too large")
            return None
        try:
            frame = parse_frame(text)
        except FrameError as exc:
            return self._refused(exc)
        if isinstance(frame, dict) and frame["type"] == "send":
            return self._charge(self._budgets.sends, self._pk, 1.0, now, self._send, frame)
        return self._handle(now, frame)

    def _send(self, now: float | None, frame: SendIn) -> Awaitable[None] | None:
        budget = self._budgets.account_sends
        return self._charge(budget, self._account, 1.0, now, self._handle, frame)

    def _handle(
        self, now: float | None, frame: SendIn | AckIn | ClientFrame
    ) -> Awaitable[None] | None:
        try:
            self._service.handle_frame(self._conn, frame)
        except FrameError as exc:
            return self._refused(exc)
        return None

    def _refused(self, exc: FrameError) -> Awaitable[None] | None:
        conn = self._conn
        if exc.code == "malformed":
            conn.close(CloseCode.BAD_FRAME, exc.message)
            return None
        if exc.code in INVALID_FRAME_CODES:
            return self._charge(self._budgets.invalid, self._pk, 1.0, None, self._answer, exc)
        self._answer(None, exc)
        return None

    def _answer(self, now: float | None, exc: FrameError) -> None:
        self._conn.push_frame(self._service.frame_error(exc))

    def _charge(
        self,
        budget: Budget,
        key: Hashable,
        cost: float,
        now: float | None,
        then: Callable[..., Awaitable[None] | None],
        *args: Any,
    ) -> Awaitable[None] | None:
        """Spend ``cost`` from ``budget`` and go on with ``then(now, *args)``; over the budget
        the connection is closed (and the frame dropped)."""
        try:
            if budget.take(key, cost, now):
                return then(now, *args)
        except RateLimited:
            self._over(budget)
            return None
        return self._refill(budget, key, cost, then, args)

    async def _refill(
        self,
        budget: Budget,
        key: Hashable,
        cost: float,
        then: Callable[..., Awaitable[None] | None],
        args: tuple[Any, ...],
    ) -> None:
        try:
            await budget.spend(key, cost)
        except RateLimited:
            self._over(budget)
            return
        pending = then(None, *args)
        if pending is not None:
            await pending

    def _over(self, budget: Budget) -> None:
        if budget is self._budgets.invalid:
            self._conn.close(CloseCode.BAD_FRAME, "too many invalid frames")
        else:
            self._conn.close(CloseCode.RATE_LIMITED, "rate limit exceeded")


class WebSocketFastPath:
    """Pure ASGI middleware: hand ``/v1/ws`` straight to :func:`websocket_endpoint`.

    A WebSocket lives as long as the device stays connected, and every layer of middleware
    and routing between the server and the endpoint stays suspended on its stack for that
    whole time. Skipping them (none of them acts on WebSockets: the body limit, HTTP metrics
    and HTTP exception handlers are HTTP-only) saves memory on every idle connection.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == "/v1/ws":
            await websocket_endpoint(WebSocket(scope, receive, send))
            return
        await self.app(scope, receive, send)
