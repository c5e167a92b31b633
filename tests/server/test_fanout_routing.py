"""Fan-out between nodes by presence (real Redis, several hubs in this process): a signal
reaches only the node holding the device, a device that moves or whose node dies is still
reached, and presence lost in Redis (expiry, restart) is written again."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import redis.asyncio as aioredis

from server.delivery.fanout import ROUTE_BYTES, Hub
from server.delivery.frames import Delivery
from tests.server.cluster import REDIS_SERVER, private_redis
from tests.server.relay_harness import free_port

pytestmark = pytest.mark.redis


class _Sink:
    def __init__(self, connection_id: str = "c1") -> None:
        self.connection_id = connection_id
        self.events: list[tuple[str, Any]] = []

    def wake(self) -> None:
        self.events.append(("wake", None))

    def push_committed(self, envelopes: Sequence[Any], *, remote: bool = False) -> None:
        self.events.append(("committed", [(d.seq, d.tail) for d in envelopes]))

    def push_frame(self, text: str) -> None:
        self.events.append(("frame", text))

    def replaced(self) -> None:
        self.events.append(("replaced", None))

    def revoked(self, reason: str) -> None:
        self.events.append(("revoked", reason))

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]

    def committed(self) -> list[tuple[int, str]]:
        return [row for kind, rows in self.events if kind == "committed" for row in rows]


async def _until(check: Callable[[], bool], what: str, wait: float = 20.0) -> None:
    """Wait for a condition (signals cross Redis and another task)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while not check():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


class _Node:
    """A hub with its received messages counted (what its subscriber handed it)."""

    def __init__(self, url: str, prefix: str, **kwargs: Any) -> None:
        self.hub = Hub(url, prefix, **kwargs)
        self.received: list[dict[str, Any]] = []
        dispatch = self.hub._dispatch

        def counting(raw: bytes | str) -> None:
            self.received.append(json.loads(raw))
            dispatch(raw)

        self.hub._dispatch = counting  # type: ignore[method-assign]

    def others(self) -> list[dict[str, Any]]:
        """Signals from other nodes (not kicks, which every node gets; nor the node's own
        broadcasts, which it skips)."""
        return [m for m in self.received if m["n"] != self.hub.node_id and m["k"] != "kick"]


@asynccontextmanager
async def _nodes(url: str, prefix: str, n: int, **kwargs: Any) -> AsyncIterator[list[_Node]]:
    nodes = [_Node(url, prefix, **kwargs) for _ in range(n)]
    async with AsyncExitStack() as stack:
        for node in nodes:
            await node.hub.start()
            stack.push_async_callback(node.hub.stop)
        yield nodes


async def _attached(node: _Node, pk: int, sink: _Sink, *peers: _Node) -> None:
    """Attach (Redis has the presence key when it returns) and wait until the attach's kick
    has reached ``peers``."""
    assert await node.hub.attach(pk, sink)
    await node.hub.settled()

    def kicked(peer: _Node) -> bool:
        return any(m["k"] == "kick" and m["c"] == sink.connection_id for m in peer.received)

    await _until(lambda: all(kicked(peer) for peer in peers), "the kick at the other nodes")


def _rows(pk: int, count: int = 2, size: int = 10) -> list[Delivery]:
    return [Delivery(pk * 100 + i, ',"d":"' + "x" * size + '"}') for i in range(count)]


async def test_a_commit_reaches_only_the_nodes_holding_its_devices(
    redis_url: str, redis_prefix: str
) -> None:
    """Three nodes: a commit on A for devices on B and C (and one connected nowhere) sends B
    only B's device and its envelopes, C only C's, and nothing to A or for the offline one.
    (The old scheme sent every node every message: B got C's device too.)"""
    async with _nodes(redis_url, redis_prefix, 3) as (a, b, c):
        on_b, on_c = _Sink(), _Sink()
        await _attached(b, 1, on_b)
        await _attached(c, 2, on_c)
        for node in (a, b, c):
            node.received.clear()
        a.hub.committed({1: _rows(1), 2: _rows(2), 3: _rows(3)})
        await _until(lambda: bool(on_b.committed() and on_c.committed()), "both deliveries")
        await a.hub.settled()
        assert on_b.committed() == [(d.seq, d.tail) for d in _rows(1)]
        assert on_c.committed() == [(d.seq, d.tail) for d in _rows(2)]
        assert [m["d"] for m in b.others()] == [[1]]
        assert [m["d"] for m in c.others()] == [[2]]
        assert a.others() == []
        # A frame (ephemeral send, notification) is routed the same way.
        a.hub.send_frame([1, 3], '{"type":"ephemeral"}')
        await _until(lambda: ("frame", '{"type":"ephemeral"}') in on_b.events, "the frame")
        assert [m["k"] for m in c.others()] == ["wake"]


async def test_a_big_commit_is_carried_whole_in_several_routes(
    redis_url: str, redis_prefix: str
) -> None:
    """More envelopes than one route call carries: every device still gets its envelopes
    with the wake-up (none is left to a queue read)."""
    async with _nodes(redis_url, redis_prefix, 2) as (a, b):
        sinks = {pk: _Sink() for pk in range(1, 61)}
        for pk, sink in sinks.items():
            assert await b.hub.attach(pk, sink)
        per_device = {pk: _rows(pk, 3, 2_000) for pk in sinks}
        assert sum(len(d.tail) for rows in per_device.values() for d in rows) > ROUTE_BYTES
        a.hub.committed(per_device)
        await _until(lambda: all(s.committed() for s in sinks.values()), "every delivery")
        for pk, sink in sinks.items():
            assert sink.committed() == [(d.seq, d.tail) for d in per_device[pk]]
            assert sink.kinds() == ["committed"]  # no queue read for the envelopes


async def test_a_device_that_moves_is_reached_on_its_new_node(
    redis_url: str, redis_prefix: str
) -> None:
    """Device 1 connects on A, then again on B: A closes its connection (4409), the presence
    key names B (written by B's attach, before B's first queue read: a wake-up routed to A
    just before is found by that read); later commits go to B only."""
    async with _nodes(redis_url, redis_prefix, 3) as (a, b, c):
        old, new = _Sink("old"), _Sink("new")
        await _attached(a, 1, old, b, c)
        await _attached(b, 1, new)
        await _until(lambda: "replaced" in old.kinds(), "the kick")
        await a.hub.settled()
        client = aioredis.from_url(redis_url)
        try:
            assert await client.get(f"{redis_prefix}at:1") == b.hub.node_id.encode()
        finally:
            await client.aclose()
        c.hub.committed({1: _rows(1)})
        await _until(lambda: bool(new.committed()), "the delivery on B")
        assert old.committed() == []
        assert a.hub.local(1) is None


async def test_the_late_presence_of_an_old_connection_is_handed_over(
    redis_url: str, redis_prefix: str
) -> None:
    """The old node's key write lands after the new node's (two nodes, two connections of
    one device at once): the kick makes the old node hand the key to the new one."""
    async with _nodes(redis_url, redis_prefix, 2) as (a, b):
        old, new = _Sink("old"), _Sink("new")
        await _attached(b, 1, new, a)
        # A's connection attached first, but its presence write reaches Redis last.
        a.hub._sinks[1] = old
        client = aioredis.from_url(redis_url)
        try:
            await client.set(f"{redis_prefix}at:1", a.hub.node_id)
            b.hub._publish({"k": "kick", "d": 1, "c": "new"})  # what B's attach sent
            await _until(lambda: "replaced" in old.kinds(), "the kick")
            await a.hub.settled()
            assert await client.get(f"{redis_prefix}at:1") == b.hub.node_id.encode()
        finally:
            await client.aclose()
        a.hub.committed({1: _rows(1)})
        await _until(lambda: bool(new.committed()), "the delivery on B")


async def test_stale_presence_of_a_dead_node_is_deleted_and_its_devices_reached_elsewhere(
    redis_url: str, redis_prefix: str
) -> None:
    """A node killed without cleaning up leaves its presence keys; the first signal for one of
    them finds nobody on its channel and deletes it; the device reconnecting on another node
    gets a key there (and its queue read)."""
    client = aioredis.from_url(redis_url)
    async with _nodes(redis_url, redis_prefix, 2) as (a, b):
        dead = Hub(redis_url, redis_prefix)
        await dead.start()
        await _attached(_wrap(dead), 1, _Sink())
        # kill -9: its tasks and Redis connections vanish, nothing is released.
        for task in dead._tasks:
            task.cancel()
        await asyncio.gather(*dead._tasks, return_exceptions=True)
        await dead._redis.aclose()
        try:
            assert await client.get(f"{redis_prefix}at:1") == dead.node_id.encode()
            a.hub.committed({1: _rows(1)})
            await a.hub.settled()
            assert await client.get(f"{redis_prefix}at:1") is None
            moved = _Sink()
            await _attached(b, 1, moved)
            assert await client.get(f"{redis_prefix}at:1") == b.hub.node_id.encode()
            a.hub.committed({1: _rows(1, 1)})
            await _until(lambda: bool(moved.committed()), "the delivery on B")
        finally:
            await client.aclose()


def _wrap(hub: Hub) -> _Node:
    node = _Node.__new__(_Node)
    node.hub, node.received = hub, []
    return node


async def test_a_lost_presence_key_is_written_again_and_its_device_woken(
    redis_url: str, redis_prefix: str
) -> None:
    """A key that disappears while its device is connected (expired during a stall, Redis
    flushed): the refresh writes it again and wakes the device, whose signals may have gone
    nowhere meanwhile."""
    async with _nodes(redis_url, redis_prefix, 2) as (a, b):
        sink = _Sink()
        await _attached(b, 1, sink)
        client = aioredis.from_url(redis_url)
        try:
            await client.delete(f"{redis_prefix}at:1")
            a.hub.committed({1: _rows(1)})  # routed nowhere: no key
            await a.hub.settled()
            assert sink.committed() == []
            wakes = sink.kinds().count("wake")
            await b.hub._refresh()
            assert sink.kinds().count("wake") == wakes + 1  # reads the queue: gets the rows
            assert await client.get(f"{redis_prefix}at:1") == b.hub.node_id.encode()
            assert 0 < await client.ttl(f"{redis_prefix}at:1") <= 60
        finally:
            await client.aclose()
        a.hub.committed({1: _rows(1)})
        await _until(lambda: bool(sink.committed()), "the delivery")


@pytest.mark.skipif(REDIS_SERVER is None, reason="needs the redis-server binary")
async def test_after_a_redis_restart_nodes_write_their_presence_again(redis_prefix: str) -> None:
    """Redis keeps nothing: after a restart every node resubscribes, writes its devices'
    keys again and wakes them; commits are routed to them again."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    async with AsyncExitStack() as stack:
        redis_proc = await stack.enter_async_context(private_redis(port))
        a, b = await stack.enter_async_context(_nodes(url, redis_prefix, 2, poll_interval=0.2))
        sink = _Sink()
        await _attached(b, 1, sink)
        redis_proc.kill()
        await asyncio.to_thread(redis_proc.wait, 10)
        await stack.enter_async_context(private_redis(port))
        client = aioredis.from_url(url)
        stack.push_async_callback(client.aclose)
        wakes = sink.kinds().count("wake")
        await _until(lambda: sink.kinds().count("wake") > wakes, "the wake after the restart")

        async def has_key() -> bool:
            return await client.get(f"{redis_prefix}at:1") == b.hub.node_id.encode()

        for _ in range(2000):
            if await has_key() and a.hub._subscribed and not a.hub.degraded:
                break
            await asyncio.sleep(0.01)
        assert await has_key()
        a.hub.committed({1: _rows(1)})
        await _until(lambda: bool(sink.committed()), "the delivery after the restart")


async def test_a_claim_answered_after_a_newer_kick_ends_its_connection(
    redis_url: str, redis_prefix: str
) -> None:
    """A's claim is made in Redis but its answer is slow; meanwhile the device attaches on B
    (a higher attach number) and B's kick reaches A before A registered its connection: A
    closes its connection at once instead of registering it and kicking B's."""
    async with _nodes(redis_url, redis_prefix, 2) as (a, b):
        answer = asyncio.Event()
        claim = a.hub._claim_one

        async def slow_answer(device_pk: int) -> int:
            number = await claim(device_pk)
            await answer.wait()
            return number

        a.hub._claim_one = slow_answer  # type: ignore[method-assign]
        old, new = _Sink("old"), _Sink("new")
        attaching = asyncio.create_task(a.hub.attach(1, old))
        await _until(lambda: 1 in a.hub._claims, "A's claim under way")
        await _attached(b, 1, new, a)
        answer.set()
        assert await attaching is False
        assert old.kinds() == ["replaced"]
        assert a.hub.local(1) is None
        await a.hub.settled()
        assert not any(m["k"] == "kick" and m["c"] == "old" for m in b.received)
        assert new.kinds() == []
        a.hub.committed({1: _rows(1)})
        await _until(lambda: bool(new.committed()), "the delivery on B")


async def test_of_two_connections_on_one_node_the_later_claim_stays(
    redis_url: str, redis_prefix: str
) -> None:
    """Two attaches of one device on one node whose claims answer in the reverse order: the
    one Redis numbered last stays, the other is closed (4409)."""
    async with _nodes(redis_url, redis_prefix, 1) as (a,):
        gates = [asyncio.Event(), asyncio.Event()]
        numbers: list[int] = []
        claim = a.hub._claim_one

        async def gated(device_pk: int) -> int:
            gate = gates[len(numbers)]
            numbers.append(await claim(device_pk))
            await gate.wait()
            return numbers[gates.index(gate)]

        a.hub._claim_one = gated  # type: ignore[method-assign]
        first, second = _Sink("first"), _Sink("second")
        attach_first = asyncio.create_task(a.hub.attach(1, first))
        await _until(lambda: len(numbers) == 1, "the first claim")
        attach_second = asyncio.create_task(a.hub.attach(1, second))
        await _until(lambda: len(numbers) == 2, "the second claim")
        assert numbers[0] < numbers[1]
        gates[1].set()  # the later claim answers first
        assert await attach_second is True
        gates[0].set()
        assert await attach_first is False
        assert a.hub.local(1) is second
        assert first.kinds() == ["replaced"] and second.kinds() == []


@pytest.mark.skipif(REDIS_SERVER is None, reason="needs the redis-server binary")
async def test_attach_numbers_grow_across_a_redis_restart_and_an_outage(
    redis_prefix: str,
) -> None:
    """Redis restarts empty: a connection made after it still outnumbers one made before.
    A connection made while Redis is down is registered unclaimed (no wait), claimed once
    Redis is back — its kick then closes the device's older connection on the other node —
    and woken."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    async with AsyncExitStack() as stack:
        redis_proc = await stack.enter_async_context(private_redis(port))
        a, b = await stack.enter_async_context(_nodes(url, redis_prefix, 2, poll_interval=0.2))
        before = _Sink("before")
        await _attached(a, 1, before, b)
        first = a.hub._attach[1]
        redis_proc.kill()
        await asyncio.to_thread(redis_proc.wait, 10)
        await _until(lambda: b.hub.degraded, "B degraded")
        during = _Sink("during")
        assert await b.hub.attach(1, during)
        assert b.hub._attach[1] is None
        assert "replaced" not in before.kinds()  # no kick without Redis
        await stack.enter_async_context(private_redis(port))
        await _until(lambda: "replaced" in before.kinds(), "the kick once Redis is back")
        second = b.hub._attach[1]
        assert second is not None and first is not None and second > first
        await _until(lambda: "wake" in during.kinds(), "the wake after the claim")
        assert a.hub.local(1) is None and b.hub.local(1) is during
        # One more attach after the restart (a stale kick of "before" would lose to it too).
        after = _Sink("after")
        await _attached(a, 1, after, b)
        assert a.hub._attach[1] > second
        await _until(lambda: "replaced" in during.kinds(), "the kick of the newest")


async def test_wake_ups_skipped_while_degraded_are_routed_when_the_node_is_back(
    redis_url: str, redis_prefix: str
) -> None:
    """A degraded node sends no wake-ups (degraded nodes poll the database), but the node
    holding the device may not be degraded (it left the mode first, or never entered it) and
    does not poll: once back, the node routes the wake-ups it skipped."""
    async with (
        _nodes(redis_url, redis_prefix, 1, poll_interval=0.2) as (a,),
        _nodes(redis_url, redis_prefix, 1, poll_interval=30.0) as (b,),  # B stays healthy
    ):
        sink = _Sink()
        await _attached(b, 1, sink)
        wakes = sink.kinds().count("wake")
        a.hub._degraded = True  # A alone lost Redis (its subscription, say)
        a.hub.committed({1: _rows(1)})
        assert sink.committed() == []
        # A's watch finds Redis healthy again and leaves the mode.
        await _until(lambda: not a.hub.degraded, "A back from the degraded mode")
        await _until(lambda: sink.kinds().count("wake") > wakes, "the skipped wake-up")
