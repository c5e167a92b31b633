"""``/v1/ws``: authenticate with the first frame, then read frames until the socket closes.

The route is thin: protocol errors are mapped to close codes here, everything else is the
service's (:mod:`server.delivery.service`) and the connection's
(:mod:`server.delivery.connection`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable

from fastapi import APIRouter, WebSocket
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketState

from server.auth.service import AuthenticatedDevice, authenticate_token
from server.delivery.budgets import Budget
from server.delivery.connection import DeviceConnection, sansio_protocol_of
from server.delivery.frames import (
    FrameError,
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
    pk, account = device.device_pk, device.account_id
    # uvicorn's own receive when it serves the socket: Starlette's wrapper only re-checks the
    # message type (uvicorn sends nothing else) and tracks a state nothing reads after this.
    receive = protocol.receive if protocol is not None else ws.receive
    frames, frame_bytes = budgets.frames, budgets.frame_bytes
    sends, account_sends = budgets.sends, budgets.account_sends
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                break
            if conn.closing:
                continue
            text = message.get("text")
            size = _utf8_len(text) if text is not None else len(message.get("bytes") or b"")
            try:
                # Charged before anything looks inside the frame. Inlined ``_charge``: a local
                # bucket (or a lease in hand) is spent synchronously, no coroutine per charge.
                if not frames.take(pk):
                    await frames.spend(pk)
                if not frame_bytes.take(pk, size):
                    await frame_bytes.spend(pk, size)
            except RateLimited:
                conn.close(CloseCode.RATE_LIMITED, "rate limit exceeded")
                continue
            if text is None:
                conn.close(CloseCode.BAD_FRAME, "binary frames are not supported; send JSON text")
                continue
            if size > cfg.max_frame_bytes:
                conn.close(CloseCode.TOO_LARGE, "frame too large")
                continue
            try:
                frame = parse_frame(text)
                if isinstance(frame, dict) and frame["type"] == "send":
                    if not sends.take(pk):
                        await sends.spend(pk)
                    if not account_sends.take(account):
                        await account_sends.spend(account)
                service.handle_frame(conn, frame)
            except FrameError as exc:
                if exc.code == "malformed":
                    conn.close(CloseCode.BAD_FRAME, exc.message)
                    continue
                if exc.code in INVALID_FRAME_CODES:
                    try:
                        await _charge(budgets.invalid, pk)
                    except RateLimited:
                        conn.close(CloseCode.BAD_FRAME, "too many invalid frames")
                        continue
                conn.push_frame(service.frame_error(exc))
            except RateLimited:
                conn.close(CloseCode.RATE_LIMITED, "rate limit exceeded")
    finally:
        expiry.cancel()
        service.hub.detach(sender.device_pk, conn)
        conn.shutdown()
        budgets.forget(pk, account)


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
