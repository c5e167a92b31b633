"""Finding 11: with two relay processes on one PostgreSQL, a Redis outage must not stop
cross-node delivery (the nodes poll the database) and must not make every node "not ready"
at once (``/readyz`` answers 200 ``degraded``, not 503)."""

from __future__ import annotations

import asyncio
import base64
import time
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest

from tests.server.cluster import REDIS_SERVER, node_ws, private_redis, relay_nodes
from tests.server.relay_harness import free_port
from tests.server.ws_kit import Peer, WsClient, setup_accounts

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(REDIS_SERVER is None, reason="needs the redis-server binary"),
]

#: Generous on a loaded machine; the poll interval is 1 s.
DELIVERY_BOUND = 20.0


async def _readiness(ports: list[int], want: str) -> list[int]:
    """Wait until every node's ``/readyz`` says ``want``; return their HTTP statuses."""
    statuses: list[int] = []
    deadline = time.monotonic() + 40
    async with httpx.AsyncClient(timeout=10) as http:
        while True:
            answers = [await http.get(f"http://127.0.0.1:{p}/readyz") for p in ports]
            statuses = [a.status_code for a in answers]
            if all(a.json()["status"] == want for a in answers):
                return statuses
            assert time.monotonic() < deadline, [a.json() for a in answers]
            await asyncio.sleep(0.2)


async def _delivered(
    sender: WsClient, receiver: WsClient, to: Peer, label: str
) -> tuple[float, int]:
    """Send one message and wait for it on the other node; (seconds it took, its seq)."""
    start = time.monotonic()
    await sender.send_message(label, [(label.encode(), [to])])
    await sender.expect("accepted", wait=DELIVERY_BOUND)
    got = await receiver.expect("deliver", wait=DELIVERY_BOUND)
    assert base64.b64decode(got["data"]).decode() == label
    await receiver.send({"type": "ack", "seqs": [got["seq"]]})
    return time.monotonic() - start, got["seq"]


async def test_nodes_keep_delivering_across_nodes_while_redis_is_down(
    tmp_path: Path, postgres_url: str, redis_prefix: str
) -> None:
    redis_port = free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    async with AsyncExitStack() as stack:
        redis = await stack.enter_async_context(private_redis(redis_port))
        ports = await stack.enter_async_context(
            relay_nodes(tmp_path, postgres_url, redis_url, redis_prefix)
        )
        p1, p2 = ports
        assert await _readiness(ports, "ready") == [200, 200]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{p1}", timeout=10) as http:
            peers = await setup_accounts(http, {"alice": [1], "bob": [1]})
        alice, bob = peers["alice", 1], peers["bob", 1]
        a = await node_ws(p1, alice)  # alice on node 1, bob on node 2
        b = await node_ws(p2, bob)
        try:
            await _delivered(a, b, bob, "before")

            redis.kill()
            await asyncio.to_thread(redis.wait, 10)
            # Every node stays in the load balancer (200) and says it is degraded.
            assert await _readiness(ports, "degraded") == [200, 200]
            # /readyz pings Redis itself; the hub notices on its own subscription a moment later.
            async with httpx.AsyncClient(timeout=10) as http:
                for port in ports:
                    deadline = time.monotonic() + 30
                    while True:
                        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
                        if "vox_fanout_degraded 1.0" in text:
                            break
                        assert time.monotonic() < deadline, "the node never said degraded"
                        await asyncio.sleep(0.2)
            # Deliveries continue during the outage, both ways, in order, with bounded delay.
            delays = []
            for i in range(3):
                delays.append((await _delivered(a, b, bob, f"a-to-b.during.{i}"))[0])
                delays.append((await _delivered(b, a, alice, f"b-to-a.during.{i}"))[0])
            assert redis.poll() is not None, "Redis must still be down"
            assert max(delays) < DELIVERY_BOUND

            # Redis comes back: both nodes are ready again and deliver over pub/sub.
            await stack.enter_async_context(private_redis(redis_port))
            assert await _readiness(ports, "ready") == [200, 200]
            await _delivered(a, b, bob, "after")
            await _delivered(b, a, alice, "after.back")
        finally:
            await a.ws.close()
            await b.ws.close()
