"""Limits on /v1/ws: queue depth, recipients per send, frame rate, slow consumers. Over a limit:
a clear error or close code, nothing stored, other connections untouched."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from websockets.asyncio.client import connect

from server.db.models_delivery import QueueEntry
from tests.server.ws_kit import World, open_ws, payload, world


async def _round_trip(w: World) -> float:
    """carol → dave, end to end; returns the seconds it took."""
    carol, dave = w["carol", 1], w["dave", 1]
    async with open_ws(w.relay, carol) as c, open_ws(w.relay, dave) as d:
        start = time.perf_counter()
        await c.send_message(f"rt-{start}", [(b"ping", [dave])])
        await c.expect("accepted")
        frame = await d.expect("deliver")
        elapsed = time.perf_counter() - start
        await d.send({"type": "ack", "seqs": [frame["seq"]]})
        return elapsed


SPEC = {"alice": [1], "bob": [1, 2], "carol": [1], "dave": [1]}


async def test_a_full_queue_refuses_the_send_and_stores_nothing(tmp_path: Path) -> None:
    # One sender fills the whole queue here (the per-sender share: tests/abuse).
    limits = {"max_queue_depth": 10, "queue_share_per_sender": 1.0}
    async with world(tmp_path, SPEC, limits=limits) as w:
        alice, b1, b2 = w["alice", 1], w["bob", 1], w["bob", 2]
        async with open_ws(w.relay, alice) as a:
            for i in range(10):
                await a.send_message(f"m{i}", [(payload(), [b1, b2])])
            for _ in range(10):
                await a.expect("accepted")
            before = await w.counts()
            await a.send_message("one-too-many", [(payload(), [b1, b2])])
            error = await a.expect("error")
            assert error["code"] == "queue_full" and error["id"] == "one-too-many"
            assert error["devices"] == [{"user": "bob", "device": 1}, {"user": "bob", "device": 2}]
            assert await w.counts() == before
        async with open_ws(w.relay, b1) as b:  # draining the queue makes room again
            frames = [await b.expect("deliver") for _ in range(10)]
            await b.send({"type": "ack", "seqs": [f["seq"] for f in frames]})
            await w.wait_count(QueueEntry, 10)
        async with open_ws(w.relay, alice) as a:
            # bob/2 is still full: the whole send is refused, bob/1 gets nothing either.
            await a.send_message("again", [(payload(), [b1, b2])])
            assert (await a.expect("error"))["devices"] == [{"user": "bob", "device": 2}]
            await a.send_message("only-b1", [(payload(), [b1])])
            assert (await a.expect("mismatch"))["missing"] == [{"user": "bob", "device": 2}]
        assert await _round_trip(w) < 2


async def test_too_many_recipients_is_refused(tmp_path: Path) -> None:
    async with world(tmp_path, SPEC, limits={"max_recipients": 2}) as w:
        alice = w["alice", 1]
        async with open_ws(w.relay, alice) as a:
            await a.send_message("wide", [(payload(), [w["bob", 1], w["bob", 2], w["carol", 1]])])
            error = await a.expect("error")
            assert error["code"] == "too_many_recipients"
        assert await w.counts() == (0, 0, 0)


async def test_a_device_over_its_frame_rate_is_closed_with_4429(tmp_path: Path) -> None:
    async with world(tmp_path, SPEC, limits={"messages_per_second_per_device": 5}) as w:
        alice, b1, b2 = w["alice", 1], w["bob", 1], w["bob", 2]
        async with open_ws(w.relay, alice) as a:
            for i in range(60):
                try:
                    await a.send_message(f"m{i}", [(payload(), [b1, b2])])
                except Exception:
                    break
            assert await a.closed() == (4429, "rate limit exceeded")
        assert await _round_trip(w) < 2


async def test_a_client_that_stops_reading_is_disconnected_and_others_are_not_slowed(
    tmp_path: Path,
) -> None:
    # alice pushes ~53 MB of frames as fast as the machine allows: lift her byte budget, which
    # a fast machine would otherwise hit first (tests/abuse covers that budget).
    limits = {"frame_bytes_per_second_per_device": 1024 * 1024 * 1024, "send_timeout_seconds": 1.0}
    async with world(tmp_path, SPEC, limits=limits) as w:
        alice, b1, b2 = w["alice", 1], w["bob", 1], w["bob", 2]
        hub = w.relay.state.hub
        # bob/1 authenticates, then never reads again (tiny client-side buffer).
        async with connect(
            w.relay.ws_url, compression=None, max_queue=1, close_timeout=0.2
        ) as stuck:
            await stuck.send(json.dumps({"type": "auth", "token": b1.token}))
            await asyncio.sleep(0.2)
            assert hub.connection_count == 1
            async with open_ws(w.relay, alice) as a:
                blob = payload(250_000)
                for i in range(80):  # 20 MB for bob/1, more than socket buffers hold
                    await a.send_message(f"m{i}", [(blob, [b1, b2])])
                for _ in range(80):
                    await a.expect("accepted")
            deadline = time.monotonic() + 10
            while hub.connection_count and time.monotonic() < deadline:
                assert await _round_trip(w) < 1.0  # others are not slowed meanwhile
                await asyncio.sleep(0.2)
            assert hub.connection_count == 0  # bob/1 was dropped
        # Nothing was lost: bob/1 gets its envelopes when it reads again.
        assert await w.count(QueueEntry) == 160
        async with open_ws(w.relay, b1, max_size=None, close_timeout=0.5) as b:
            first = await b.expect("deliver")
            assert first["from"] == {"user": "alice", "device": 1}
