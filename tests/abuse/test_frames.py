"""Finding 2: every frame is charged before it is parsed; invalid and oversized frames close.

Through a real relay on loopback with small configured budgets.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.server.ws_kit import open_ws, world


async def test_a_flood_of_unknown_type_frames_is_closed_4400_once_the_invalid_budget_is_spent(
    tmp_path: Path,
) -> None:
    limits = {"invalid_frames_per_minute_per_device": 5}
    async with (
        world(tmp_path, {"mallory": [1]}, limits=limits) as w,
        open_ws(w.relay, w["mallory", 1]) as ws,
    ):
        junk = json.dumps({"type": "junk", "pad": "x" * 1000})
        for _ in range(5):
            await ws.send(junk)
            assert (await ws.expect("error"))["code"] == "unknown_type"
        for _ in range(50):
            try:
                await ws.send(junk)
            except Exception:
                break
        assert await ws.closed() == (4400, "too many invalid frames")


async def test_the_invalid_frame_budget_is_not_refilled_by_reconnecting(tmp_path: Path) -> None:
    limits = {"invalid_frames_per_minute_per_device": 4}
    async with (
        world(tmp_path, {"mallory": [1]}, limits=limits) as w,
        open_ws(w.relay, w["mallory", 1]) as ws,
    ):
        for _ in range(4):
            await ws.send({"type": "junk"})
            await ws.expect("error")
        async with open_ws(w.relay, w["mallory", 1]) as ws:
            await ws.send({"type": "junk"})
            assert await ws.closed() == (4400, "too many invalid frames")


async def test_frame_bytes_are_charged_before_parsing_and_close_4429(tmp_path: Path) -> None:
    # 64 KiB/s with a burst of max(2 s, one frame): a stream of 256 KiB frames runs out fast,
    # whatever they contain (here: valid JSON of an unknown type, answered while budget lasts).
    limits = {
        "frame_bytes_per_second_per_device": 64 * 1024,
        "max_frame_bytes": 256 * 1024,
        "max_ciphertext_bytes": 64 * 1024,
        "invalid_frames_per_minute_per_device": 10_000,
    }
    async with (
        world(tmp_path, {"mallory": [1]}, limits=limits) as w,
        open_ws(w.relay, w["mallory", 1]) as ws,
    ):
        big = json.dumps({"type": "junk", "pad": "x" * (250 * 1024)})
        for _ in range(20):
            try:
                await ws.send(big)
            except Exception:
                break
        assert await ws.closed(wait=10) == (4429, "rate limit exceeded")


async def test_frame_count_is_charged_per_device_and_closes_4429(tmp_path: Path) -> None:
    limits = {"frames_per_second_per_device": 5}
    async with (
        world(tmp_path, {"mallory": [1]}, limits=limits) as w,
        open_ws(w.relay, w["mallory", 1]) as ws,
    ):
        for i in range(60):
            try:
                await ws.send({"type": "ping", "id": str(i)})
            except Exception:
                break
        assert await ws.closed(wait=10) == (4429, "rate limit exceeded")


async def test_an_oversized_frame_gets_close_1009_frame_too_large_not_a_reset(
    tmp_path: Path,
) -> None:
    limits = {"max_frame_bytes": 64 * 1024, "max_ciphertext_bytes": 16 * 1024}
    async with (
        world(tmp_path, {"mallory": [1]}, limits=limits) as w,
        open_ws(w.relay, w["mallory", 1], max_size=None) as ws,
    ):
        await ws.send("x" * (1024 * 1024))  # 1 MiB: far over the limit
        assert await ws.closed(wait=10) == (1009, "frame too large")
        async with open_ws(w.relay, w["mallory", 1]) as ws:
            await ws.send(json.dumps({"type": "ping", "id": "é" * 40_000}))  # 80,000 bytes
            assert await ws.closed(wait=10) == (1009, "frame too large")


async def test_a_frame_before_auth_is_limited_to_4096_bytes(tmp_path: Path) -> None:
    async with world(tmp_path, {"mallory": [1]}) as w, open_ws(w.relay, None) as ws:
        await ws.send(json.dumps({"type": "auth", "token": "x" * 100_000}))
        assert await ws.closed(wait=10) == (1009, "frame too large")
