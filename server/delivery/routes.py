"""``/v1/ws``: authenticate with the first frame, then read frames until the socket closes.

The route is thin: protocol errors are mapped to close codes here, everything else is the
service's (:mod:`server.delivery.service`) and the connection's
(:mod:`server.delivery.connection`).
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, WebSocket
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketState

from server.delivery.connection import CloseCode, DeviceConnection
from server.delivery.frames import AuthFrame, FrameError, dumps, parse_client_frame, parse_json
from server.delivery.service import DeliveryService, RateLimitExceeded
from server.delivery.writer import Sender
from server.errors import Unauthorized
from server.services.auth import authenticate_token

__all__ = ["WebSocketFastPath", "router"]

log = logging.getLogger("vox.delivery")

router = APIRouter()


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    if ws.application_state == WebSocketState.CONNECTED:
        await ws.close(code, reason)


async def _authenticate(ws: WebSocket, service: DeliveryService) -> Sender | None:
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
    if len(text) > 4096:
        await _close(ws, CloseCode.TOO_LARGE, "auth frame too large")
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
        async with ws.app.state.sessions() as session:
            device = await authenticate_token(session, frame.token)
    except Unauthorized as exc:
        await _close(ws, CloseCode.UNAUTHORIZED, exc.code)
        return None
    return Sender(device.device_pk, device.username, device.device_id)


@router.websocket("/v1/ws")
async def websocket_endpoint(ws: WebSocket) -> None:
    """One device's messaging connection (``docs/protocol-ws.md``)."""
    service: DeliveryService = ws.app.state.delivery
    await ws.accept()
    if not service.accepting:
        await _close(ws, CloseCode.GOING_AWAY, "server shutting down")
        return
    sender = await _authenticate(ws, service)
    if sender is None:
        return
    conn = DeviceConnection(ws, sender, service)
    service.hub.attach(sender.device_pk, conn)
    cfg = service.config
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
    bucket = service.bucket(cfg.messages_per_second)
    receive = ws.receive
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                break
            if conn.closing:
                continue
            text = message.get("text")
            if text is None:
                conn.close(CloseCode.BAD_FRAME, "binary frames are not supported; send JSON text")
                continue
            if len(text) > cfg.max_frame_bytes:
                conn.close(CloseCode.TOO_LARGE, "frame too large")
                continue
            try:
                service.handle_text(conn, text, bucket)
            except FrameError as exc:
                if exc.code == "malformed":
                    conn.close(CloseCode.BAD_FRAME, exc.message)
                else:
                    conn.push_frame(service.frame_error(exc))
            except RateLimitExceeded:
                conn.close(CloseCode.RATE_LIMITED, "rate limit exceeded")
    finally:
        service.hub.detach(sender.device_pk, conn)
        conn.shutdown()


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
