"""A malicious relay for client tests: the real relay app with an ASGI layer in front of it that
serves forged answers to ``GET /v1/accounts/{user}/devices`` when told to.

    forgeries = Forgeries()
    async with malicious_relay(tmp_path, forgeries) as relay:
        forgeries.serve("bob", account_key=k2, device_list=list_signed_by_k2)  # next fetch only
        ...

Everything else (registration, prekeys, the WebSocket) is the real relay, unchanged, so the
clients under test run their ordinary code against an adversary who controls what the relay
says about other users' keys.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from tests.server.relay_harness import Relay, b64, make_settings, running_relay

__all__ = ["Forgeries", "malicious_relay"]


class Forgeries:
    """Queued forged device-list answers, per username; each is served once, in order."""

    def __init__(self) -> None:
        self._queued: dict[str, list[bytes]] = {}
        self.served = 0

    def serve(self, username: str, *, account_key: bytes, device_list: bytes) -> None:
        """Answer the next fetch of ``username``'s devices with this key and signed list."""
        body = {  # a complete AccountDevices answer (wire.rest), with forged key and list
            "username": username,
            "account_key": b64(account_key),
            "device_list": b64(device_list),
            "device_list_version": 1,
            "devices": [],
        }
        self._queued.setdefault(username, []).append(json.dumps(body).encode())

    def take(self, username: str) -> bytes | None:
        """The next forged body for ``username`` (None: let the real relay answer)."""
        queue = self._queued.get(username)
        if not queue:
            return None
        self.served += 1
        return queue.pop(0)


class _ForgingLayer:
    def __init__(self, app: ASGIApp, forgeries: Forgeries) -> None:
        self.app = app
        self.forgeries = forgeries

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        parts = path.strip("/").split("/")
        if (
            scope["type"] == "http"
            and scope.get("method") == "GET"
            and len(parts) == 4
            and parts[:2] == ["v1", "accounts"]
            and parts[3] == "devices"
        ):
            body = self.forgeries.take(parts[2])
            if body is not None:
                headers = [
                    (b"content-type", b"application/json"),
                    (b"content-length", b"%d" % len(body)),
                ]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


@asynccontextmanager
async def malicious_relay(tmp_path: Path, forgeries: Forgeries) -> AsyncIterator[Relay]:
    """The real relay (SQLite in ``tmp_path``) behind the forging layer, on loopback."""
    from server.app import create_app

    settings = make_settings(tmp_path)
    app = create_app(settings)
    app.add_middleware(_ForgingLayer, forgeries=forgeries)  # outermost: sees requests first
    async with running_relay(settings, app=app) as relay:
        yield relay
