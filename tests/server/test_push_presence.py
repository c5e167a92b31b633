"""Presence and coalescing of the push layer across relay nodes (real Redis), and their
fallback to one node's own knowledge when Redis is unreachable."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from server.clock import Clock
from server.push.presence import Coalescer, Presence
from tests.server.relay_harness import free_port


@pytest.mark.redis
async def test_nodes_see_each_others_connected_devices(redis_url: str, redis_prefix: str) -> None:
    client = aioredis.from_url(redis_url)
    a = Presence(client, redis_prefix, "node-a")
    b = Presence(client, redis_prefix, "node-b")
    await a.start()
    await b.start()
    try:
        a.attached(5)
        b.attached(7)
        await a.settled()
        await b.settled()
        assert await b.connected([5, 6, 7]) == {5, 7}
        assert await a.connected([5, 6, 7]) == {5, 7}
        # The device moves to node b, then its old node-a connection ends: still connected.
        b.attached(5)
        await b.settled()
        a.detached(5)
        await a.settled()
        assert await a.connected([5]) == {5}
        b.detached(5)
        await b.settled()
        assert await a.connected([5]) == set()
        # A node's own key for a device it no longer holds does not count, even if its
        # deletion has not reached Redis yet.
        a.attached(9)
        await a.settled()
        a._local.discard(9)  # as after detached(), before the queued DEL runs
        assert await a.connected([9]) == set()
    finally:
        await a.stop()
        await b.stop()
        await client.aclose()


@pytest.mark.redis
async def test_the_coalescing_window_is_shared_by_nodes(redis_url: str, redis_prefix: str) -> None:
    client = aioredis.from_url(redis_url)
    try:
        one, two = (
            Coalescer(client, redis_prefix, 60, Clock()),
            Coalescer(client, redis_prefix, 60, Clock()),
        )
        assert await one.claim(1)
        assert not await two.claim(1)
        assert not await one.claim(1)
        assert await two.claim(2)
    finally:
        await client.aclose()


async def test_without_redis_a_node_uses_what_it_knows() -> None:
    dead = aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    presence = Presence(dead, "vox:", "node-a")
    await presence.start()
    try:
        presence.attached(3)
        assert await presence.connected([3, 4]) == {3}
        coalescer = Coalescer(dead, "vox:", 60, Clock())
        assert await coalescer.claim(4)
        assert not await coalescer.claim(4)
    finally:
        await presence.stop()
        await dead.aclose()
    local = Coalescer(None, "vox:", 60, Clock())
    assert await local.claim(1) and not await local.claim(1)
