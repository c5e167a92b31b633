"""Graceful shutdown of a real ``vox-relay serve`` process: SIGTERM closes every WebSocket with
1001 "going away", and every send answered ``accepted`` is still there after a restart."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

from tests.server.relay_harness import free_port, relay_process
from tests.server.ws_kit import Peer, WsClient, setup_accounts


class _Relay:
    def __init__(self, port: int) -> None:
        self.port = port
        self.ws_url = f"ws://127.0.0.1:{port}/v1/ws"


async def _auth(url: str, peer: Peer) -> Any:
    ws = await connect(url, compression=None, close_timeout=2)
    await ws.send(json.dumps({"type": "auth", "token": peer.token}))
    assert json.loads(await ws.recv())["type"] == "ready"
    return ws


async def test_sigterm_closes_sockets_with_1001_and_loses_nothing_accepted(
    tmp_path: Path,
) -> None:
    port = free_port()
    env = {"VOX_DATA_DIR": str(tmp_path / "data"), "VOX_LOG_LEVEL": "warning"}
    args = ["serve", "--port", str(port)]
    async with relay_process(args, env=env, port=port) as proc:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            peers = await setup_accounts(http, {"alice": [1], "bob": [1]})
        alice, bob = peers["alice", 1], peers["bob", 1]
        url = _Relay(port).ws_url
        a = WsClient(await _auth(url, alice))
        b = WsClient(await _auth(url, bob))
        for i in range(40):
            await a.send_message(f"m{i}", [(f"msg {i}".encode(), [bob])])
        # Stop while sends are still arriving and being committed.
        proc.send_signal(signal.SIGTERM)
        accepted: set[str] = set()
        try:
            while True:
                frame = await a.recv(wait=10)
                if frame["type"] == "accepted":
                    accepted.add(frame["id"])
        except Exception:
            pass
        rcvd_a = a.ws.protocol.close_rcvd
        assert rcvd_a is not None and rcvd_a.code == 1001, rcvd_a
        assert rcvd_a.reason == "server shutting down"
        assert await b.closed() == (1001, "server shutting down")
        await asyncio.wait_for(asyncio.to_thread(proc.wait), 15)
        # uvicorn re-raises the signal it handled once shutdown is complete.
        assert proc.returncode in (0, -signal.SIGTERM)
    async with relay_process(args, env=env, port=port):
        got: set[bytes] = set()
        b = WsClient(await _auth(url, bob))
        try:
            while True:
                frame = await b.recv(wait=1)
                got.add(frame["data"])
        except TimeoutError:
            pass
        await b.ws.close()
    delivered = {base64.b64decode(d).decode() for d in got}
    assert {f"msg {i[1:]}" for i in accepted} <= delivered
    assert len(accepted) > 0
