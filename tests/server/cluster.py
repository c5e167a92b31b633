"""Several real relay processes on one PostgreSQL database, a throw-away ``redis-server``,
and WebSocket clients logged in on a chosen node (used by the scale-out and outage tests)::

    async with private_redis(port) as redis_proc, relay_nodes(tmp_path, pg, url, prefix) as ports:
        ws = await node_ws(ports[0], peer)
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from tests.server.relay_harness import free_port, relay_process
from tests.server.ws_kit import Peer, WsClient

__all__ = ["REDIS_SERVER", "node_ws", "private_redis", "relay_nodes"]

#: The ``redis-server`` binary (tests that need it skip when it is missing).
REDIS_SERVER = shutil.which("redis-server")
_NO_PERSISTENCE = ("--save", "", "--appendonly", "no")


@asynccontextmanager
async def relay_nodes(
    tmp_path: Path,
    postgres_url: str,
    redis_url: str,
    prefix: str,
    n: int = 2,
    env: Mapping[str, str] | None = None,
    procs: list[subprocess.Popen[bytes]] | None = None,
) -> AsyncIterator[list[int]]:
    """``n`` ``vox-relay serve`` processes on one database and Redis; yields their ports
    (their processes are appended to ``procs`` if given, e.g. to kill one)."""
    ports = [free_port() for _ in range(n)]
    async with AsyncExitStack() as stack:
        for i, port in enumerate(ports):
            node_env = {
                "VOX_DATA_DIR": str(tmp_path / f"node{i}"),
                "VOX_DATABASE_URL": postgres_url,
                "VOX_REDIS_URL": redis_url,
                "VOX_REDIS_PREFIX": prefix,
                "VOX_LOG_LEVEL": "warning",
                **(env or {}),
            }
            proc = await stack.enter_async_context(
                relay_process(
                    ["serve", "--port", str(port)], env=node_env, port=port, startup_timeout=120
                )
            )
            if procs is not None:
                procs.append(proc)
        yield ports


async def node_ws(port: int, peer: Peer) -> WsClient:
    """A WebSocket of ``peer`` on the node at ``port``, authenticated (``ready`` received)."""
    ws: Any = await connect(f"ws://127.0.0.1:{port}/v1/ws", compression=None, close_timeout=2)
    client = WsClient(ws)
    await client.send({"type": "auth", "token": peer.token})
    client.ready = await client.expect("ready")
    return client


@asynccontextmanager
async def private_redis(port: int) -> AsyncIterator[subprocess.Popen[bytes]]:
    """A throw-away ``redis-server`` on ``port`` (nothing persisted), stopped at the end."""
    assert REDIS_SERVER is not None, "needs the redis-server binary"
    proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once; we poll below
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", *_NO_PERSISTENCE],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                await writer.wait_closed()
                break
            except OSError:
                assert loop.time() < deadline, "redis-server did not start"
                await asyncio.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        await asyncio.to_thread(proc.wait, 10)
