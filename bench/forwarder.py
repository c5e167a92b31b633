"""The baselines of ``bench/relay.py``: in-memory WebSocket forwarders (no persistence, no
auth, no validation) on the relay's uvicorn/websockets stack — the floor for a Python relay.

    python bench/forwarder.py PORT asgi|fastapi

``asgi`` is a bare ASGI app; ``fastapi`` is the same forwarder written the usual way (a
FastAPI WebSocket route, Starlette's ``WebSocket``). Protocol: ``{"type":"hello","name":N}``
names the socket (answered ``ready``); ``send`` frames are forwarded as ``deliver`` to the
sockets named ``user:device`` and answered ``accepted``. This module imports nothing of the
relay, so the forwarder's RSS and CPU are its own.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

# --- the baseline: a minimal in-memory forwarder --------------------------------------------


async def baseline_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """ASGI app: ``hello`` names the socket; ``send`` is forwarded and answered ``accepted``."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    sockets = _SOCKETS
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    name = None
    seq = 0
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            frame = json.loads(message["text"])
            kind = frame["type"]
            if kind == "hello":
                name = frame["name"]
                sockets[name] = send
                await send({"type": "websocket.send", "text": '{"type":"ready"}'})
            elif kind == "send":
                for p in frame["payloads"]:
                    for to in p["to"]:
                        target = sockets.get(f"{to['user']}:{to['device']}")
                        if target is not None:
                            seq += 1
                            out = json.dumps(
                                {"type": "deliver", "seq": seq, "from": name, "data": p["data"]}
                            )
                            await target({"type": "websocket.send", "text": out})
                await send(
                    {
                        "type": "websocket.send",
                        "text": json.dumps({"type": "accepted", "id": frame["id"]}),
                    }
                )
    finally:
        if name is not None:
            sockets.pop(name, None)


_SOCKETS: dict[str, Any] = {}


def fastapi_app() -> Any:
    """The same forwarder written the usual way: a FastAPI WebSocket route, Starlette's
    ``WebSocket`` object, the standard ``json`` module."""
    app = FastAPI()
    sockets: dict[str, WebSocket] = {}

    @app.get("/")
    async def root() -> str:
        return "ok"

    @app.websocket("/")
    async def forward(ws: WebSocket) -> None:
        await ws.accept()
        name = None
        seq = 0
        try:
            while True:
                frame = json.loads(await ws.receive_text())
                kind = frame["type"]
                if kind == "hello":
                    name = frame["name"]
                    sockets[name] = ws
                    await ws.send_text('{"type":"ready"}')
                elif kind == "send":
                    for p in frame["payloads"]:
                        for to in p["to"]:
                            target = sockets.get(f"{to['user']}:{to['device']}")
                            if target is not None:
                                seq += 1
                                out = {"type": "deliver", "seq": seq, "from": name}
                                out["data"] = p["data"]
                                await target.send_text(json.dumps(out))
                    await ws.send_text(json.dumps({"type": "accepted", "id": frame["id"]}))
        except WebSocketDisconnect:
            pass
        finally:
            if name is not None:
                sockets.pop(name, None)

    return app


def serve_baseline(port: int, kind: str = "asgi") -> None:
    import uvicorn

    uvicorn.run(
        fastapi_app() if kind == "fastapi" else baseline_app,
        host="127.0.0.1",
        port=port,
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )


if __name__ == "__main__":
    serve_baseline(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "asgi")
