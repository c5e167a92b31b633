"""Frames of an authenticated connection go straight from the socket to the frame handler
(``GuardedWebSocketProtocol.hand_frames_to``): no ASGI queue, no wake-up of the endpoint's
task and, for simple text frames, not websockets' generator parser either — and they are
still handled exactly once, in the order they were sent, whichever path each one takes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest

from server.delivery.connection import DeviceConnection
from server.edge.connections import GuardedWebSocketProtocol
from server.ratelimit import RateLimiter
from tests.server.relay_harness import make_settings, running_relay
from tests.server.ws_kit import Peer, World, WsClient, open_ws, setup_accounts, world


def _protocol(w: World, peer: Peer) -> GuardedWebSocketProtocol:
    (sink,) = [
        s
        for s in w.relay.state.hub.local_sinks()
        if isinstance(s, DeviceConnection) and s.device.user == peer.user
    ]
    proto = sink._proto
    assert isinstance(proto, GuardedWebSocketProtocol)
    return proto


async def _pongs(client: WsClient, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        ids.append((await client.expect("pong"))["id"])
    return ids


async def test_simple_frames_skip_the_queue_and_the_websockets_parser(tmp_path: Path) -> None:
    async with world(tmp_path, {"alice": [1]}) as w, open_ws(w.relay, w["alice", 1]) as a:
        proto = _protocol(w, w["alice", 1])
        queued: list[str] = []
        parsed: list[int] = []
        put, feed = proto.queue.put_nowait, proto.conn.receive_data

        def counting_put(message: Any) -> None:
            queued.append(message["type"])
            put(message)

        def counting_feed(data: bytes | bytearray) -> None:
            parsed.append(len(data))
            feed(data)

        proto.queue.put_nowait = counting_put  # type: ignore[method-assign,assignment]
        proto.conn.receive_data = counting_feed  # type: ignore[method-assign]
        for i in range(40):
            await a.send({"type": "ping", "id": f"p{i}"})
        assert await _pongs(a, 40) == [f"p{i}" for i in range(40)]
        assert queued == []  # the endpoint's task was not woken for any of them
        assert parsed == []  # nor did websockets' parser see them


async def test_frames_keep_their_order_when_some_must_wait(tmp_path: Path) -> None:
    """Every third frame is finished asynchronously (as when a shared budget's lease must be
    refilled): frames that arrive meanwhile queue behind it, and fragmented messages (parsed
    by websockets) take their turn in between."""
    async with world(tmp_path, {"alice": [1]}) as w, open_ws(w.relay, w["alice", 1]) as a:
        proto = _protocol(w, w["alice", 1])
        real = proto._handler
        assert real is not None
        count = 0

        def every_third_waits(text: str | None, size: int) -> Awaitable[None] | None:
            nonlocal count
            count += 1
            if count % 3:
                return real(text, size)

            async def later() -> None:
                await asyncio.sleep(0.02)
                pending = real(text, size)
                if pending is not None:
                    await pending

            return later()

        proto._handler = every_third_waits
        expected = []
        for i in range(30):
            frame = json.dumps({"type": "ping", "id": f"p{i}"})
            if i % 7 == 3:
                await a.ws.send([frame[:5], frame[5:]])  # a fragmented message
            else:
                await a.send(frame)
            expected.append(f"p{i}")
        assert await _pongs(a, 30) == expected
        await a.nothing()  # each one was handled once
        assert count >= 3  # (frames that came while one waited were queued behind it)
        # Once the queue is worked off, frames go to the handler directly again.
        await a.send({"type": "ping", "id": "last"})
        assert await _pongs(a, 1) == ["last"]
        assert proto.queue.empty() and not proto._handler_paused


async def test_an_error_in_the_handler_ends_the_connection_as_before(tmp_path: Path) -> None:
    async with world(tmp_path, {"alice": [1], "bob": [1]}) as w:
        async with open_ws(w.relay, w["alice", 1]) as a:
            proto = _protocol(w, w["alice", 1])

            def broken(text: str | None, size: int) -> None:
                raise RuntimeError("handler bug")

            proto._handler = broken
            await a.send({"type": "ping", "id": "p"})
            code, _ = await a.closed()
            assert code is None  # the app failed: the transport is closed, as for any app error
        async with open_ws(w.relay, w["bob", 1]) as b:  # the relay serves everyone else
            await b.send({"type": "ping", "id": "b"})
            assert await _pongs(b, 1) == ["b"]


def _record_charges(limiter: RateLimiter, name: str, charged: list[tuple[str, Any]]) -> None:
    check = limiter.check

    def recording(key: Any, cost: float = 1.0, now: float | None = None) -> None:
        charged.append((name, now))
        check(key, cost, now)

    limiter.check = recording  # type: ignore[method-assign]


async def test_a_send_is_charged_to_its_four_budgets_at_one_clock_read(tmp_path: Path) -> None:
    async with (
        world(tmp_path, {"alice": [1], "bob": [1]}) as w,
        open_ws(w.relay, w["alice", 1]) as a,
    ):
        budgets = w.relay.state.delivery.budgets
        charged: list[tuple[str, Any]] = []
        for name in ("frames", "frame_bytes", "sends", "account_sends"):
            _record_charges(getattr(budgets, name).local, name, charged)
        await a.send_message("m1", [(b"hello", [w["bob", 1]])])
        await a.expect("accepted")
        assert [n for n, _ in charged] == ["frames", "frame_bytes", "sends", "account_sends"]
        (now,) = {now for _, now in charged}
        assert now is not None


@pytest.mark.redis
async def test_frames_keep_their_order_across_shared_budget_refills(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    """With Redis the frame budget is drawn in leases of a tenth of the bucket: every few
    frames one waits for a round trip to Redis, and the frames behind it wait their turn."""
    settings = make_settings(
        tmp_path,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        limits={"frames_per_second_per_device": 50},  # a bucket of 100, leases of 10
    )
    async with running_relay(settings) as relay:
        async with relay.client() as http:
            peers = await setup_accounts(http, {"alice": [1]})
        async with open_ws(relay, peers["alice", 1]) as a:
            for i in range(60):
                await a.send({"type": "ping", "id": f"p{i}"})
            assert await _pongs(a, 60) == [f"p{i}" for i in range(60)]
