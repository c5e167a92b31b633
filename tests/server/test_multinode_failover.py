"""Two relay processes on PostgreSQL + Redis: a node killed with SIGKILL leaves presence keys
naming it (wake-ups for its devices are routed by them); nothing accepted is lost or stuck,
its devices reconnecting on the other node get everything, once acked."""

from __future__ import annotations

import asyncio
import base64
import subprocess
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from tests.server.cluster import node_ws, relay_nodes
from tests.server.ws_kit import setup_accounts

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


async def test_a_node_killed_with_sigkill_loses_nothing(
    tmp_path: Path, postgres_url: str, redis_url: str, redis_prefix: str
) -> None:
    procs: list[subprocess.Popen[bytes]] = []
    async with relay_nodes(tmp_path, postgres_url, redis_url, redis_prefix, procs=procs) as (
        p1,
        p2,
    ):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{p1}", timeout=10) as http:
            peers = await setup_accounts(http, {"alice": [1], "bob": [1]})
        alice, bob = peers["alice", 1], peers["bob", 1]
        a = await node_ws(p1, alice)  # alice on node 1
        b = await node_ws(p2, bob)  # bob on node 2
        redis = aioredis.from_url(redis_url)
        try:
            await a.send_message("m0", [(b"before", [bob])])
            await a.expect("accepted")
            assert base64.b64decode((await b.expect("deliver"))["data"]) == b"before"  # no ack
            stale = await redis.keys(f"{redis_prefix}at:*")
            assert len(stale) == 2  # alice's (node 1) and bob's (node 2)
            procs[1].kill()  # SIGKILL: no cleanup, bob's key still names node 2
            await asyncio.to_thread(procs[1].wait, 10)
            for i in range(5):
                await a.send_message(f"m{i + 1}", [(f"during {i}".encode(), [bob])])
                await a.expect("accepted")
            # A wake-up for bob found nobody on node 2's channel and deleted the stale key.
            for _ in range(500):
                if len(await redis.keys(f"{redis_prefix}at:*")) == 1:
                    break
                await asyncio.sleep(0.02)
            assert len(await redis.keys(f"{redis_prefix}at:*")) == 1
            b2 = await node_ws(p1, bob)  # bob reconnects on node 1: everything, in order
            got = [await b2.expect("deliver") for _ in range(6)]
            assert [base64.b64decode(d["data"]).decode() for d in got] == [
                "before",
                *(f"during {i}" for i in range(5)),
            ]
            await b2.send({"type": "ack", "seqs": [d["seq"] for d in got]})
            await a.send_message("m6", [(b"after", [bob])])
            await a.expect("accepted")
            assert base64.b64decode((await b2.expect("deliver"))["data"]) == b"after"
            await b2.nothing()
            await b2.ws.close()
        finally:
            await redis.aclose()
            await a.ws.close()
            await b.ws.close()
