"""Two real relay processes sharing one PostgreSQL database and one Redis deliver to each
other's connected devices (wake-ups over Redis pub/sub, envelopes read from PostgreSQL)."""

from __future__ import annotations

import asyncio
import base64
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.server.relay_harness import free_port, relay_process
from tests.server.test_ws_kit import Peer, WsClient, setup_accounts

pytestmark = [pytest.mark.postgres, pytest.mark.redis]  # (the outage test runs its own Redis)


@asynccontextmanager
async def _nodes(
    tmp_path: Path, postgres_url: str, redis_url: str, prefix: str, n: int = 2
) -> AsyncIterator[list[int]]:
    ports = [free_port() for _ in range(n)]
    async with AsyncExitStack() as stack:
        for i, port in enumerate(ports):
            env = {
                "VOX_DATA_DIR": str(tmp_path / f"node{i}"),
                "VOX_DATABASE_URL": postgres_url,
                "VOX_REDIS_URL": redis_url,
                "VOX_REDIS_PREFIX": prefix,
                "VOX_LOG_LEVEL": "warning",
            }
            await stack.enter_async_context(
                relay_process(["serve", "--port", str(port)], env=env, port=port)
            )
        yield ports


async def _ws(port: int, peer: Peer) -> WsClient:
    ws: Any = await connect(f"ws://127.0.0.1:{port}/v1/ws", compression=None, close_timeout=2)
    client = WsClient(ws)
    await client.send({"type": "auth", "token": peer.token})
    client.ready = await client.expect("ready")
    return client


async def test_two_nodes_deliver_to_each_others_devices(
    tmp_path: Path, postgres_url: str, redis_url: str, redis_prefix: str
) -> None:
    async with _nodes(tmp_path, postgres_url, redis_url, redis_prefix) as (p1, p2):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{p1}", timeout=10) as http:
            peers = await setup_accounts(http, {"alice": [1], "bob": [1, 2]})
        alice, b1, b2 = peers["alice", 1], peers["bob", 1], peers["bob", 2]
        a = await _ws(p1, alice)  # alice on node 1
        b = await _ws(p2, b1)  # bob/1 on node 2
        try:
            # node 1 commits, Redis wakes node 2, node 2 reads PostgreSQL and delivers.
            for i in range(20):
                await a.send_message(f"m{i}", [(f"hello {i}".encode(), [b1, b2])])
            accepted = [await a.expect("accepted") for _ in range(20)]
            got = [await b.expect("deliver") for _ in range(20)]
            assert [base64.b64decode(d["data"]).decode() for d in got] == [
                f"hello {i}" for i in range(20)
            ]
            assert [d["envelope"] for d in got] == [x["envelope"] for x in accepted]
            await b.send({"type": "ack", "seqs": [d["seq"] for d in got]})
            # And back: bob/1 (node 2) → alice (node 1), plus bob's other device.
            await b.send_message("r1", [(b"reply", [alice]), (b"sync copy", [b2])])
            await b.expect("accepted")
            reply = await a.expect("deliver")
            assert base64.b64decode(reply["data"]) == b"reply"
            # Ephemeral frames cross nodes too (carried by Redis, never stored).
            await a.send_message("t1", [(b"typing", [b1, b2])], ephemeral=True)
            await a.expect("accepted")
            assert base64.b64decode((await b.expect("ephemeral"))["data"]) == b"typing"
            # bob/2 connects on node 1 and gets its queue (written by both nodes).
            b2ws = await _ws(p1, b2)
            got2 = [await b2ws.expect("deliver") for _ in range(21)]
            assert base64.b64decode(got2[-1]["data"]) == b"sync copy"
            await b2ws.ws.close()
            # bob/1 reconnecting on node 1 replaces its node-2 connection (4409).
            b_again = await _ws(p1, b1)
            assert await b.closed() == (4409, "replaced by a newer connection of this device")
            await a.send_message("m-final", [(b"final", [b1, b2])])
            await a.expect("accepted")
            assert base64.b64decode((await b_again.expect("deliver"))["data"]) == b"final"
            await b_again.ws.close()
        finally:
            await a.ws.close()
            await b.ws.close()


@asynccontextmanager
async def _private_redis(port: int) -> AsyncIterator[subprocess.Popen[bytes]]:
    """A throw-away ``redis-server`` on ``port`` (nothing persisted), stopped at the end."""
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
        proc.terminate()
        await asyncio.to_thread(proc.wait, 10)


REDIS_SERVER = shutil.which("redis-server") or "redis-server"
_NO_PERSISTENCE = ("--save", "", "--appendonly", "no")


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary")
async def test_a_redis_outage_delays_cross_node_delivery_but_loses_nothing(
    tmp_path: Path, postgres_url: str, redis_prefix: str
) -> None:
    redis_port = free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    async with AsyncExitStack() as stack:
        redis = await stack.enter_async_context(_private_redis(redis_port))
        p1, p2 = await stack.enter_async_context(
            _nodes(tmp_path, postgres_url, redis_url, redis_prefix)
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{p1}", timeout=10) as http:
            peers = await setup_accounts(http, {"alice": [1], "bob": [1]})
        alice, bob = peers["alice", 1], peers["bob", 1]
        a = await _ws(p1, alice)  # alice on node 1, bob on node 2: only Redis links them
        b = await _ws(p2, bob)
        try:
            await a.send_message("before", [(b"before", [bob])])
            await a.expect("accepted")
            assert base64.b64decode((await b.expect("deliver"))["data"]) == b"before"
            # Redis goes away: sends are still accepted (PostgreSQL holds the queue) ...
            redis.kill()
            await asyncio.to_thread(redis.wait, 10)
            for i in range(5):
                await a.send_message(f"during{i}", [(f"during {i}".encode(), [bob])])
                await a.expect("accepted")
            # ... and when it is back, node 2 resubscribes, wakes its devices and delivers
            # everything from the database, in order, once.
            await stack.enter_async_context(_private_redis(redis_port))
            got = [await b.expect("deliver", wait=30) for _ in range(5)]
            assert [base64.b64decode(d["data"]).decode() for d in got] == [
                f"during {i}" for i in range(5)
            ]
            await b.send({"type": "ack", "seqs": [d["seq"] for d in got]})
            await a.send_message("after", [(b"after", [bob])])
            await a.expect("accepted")
            assert base64.b64decode((await b.expect("deliver", wait=30))["data"]) == b"after"
        finally:
            await a.ws.close()
            await b.ws.close()
