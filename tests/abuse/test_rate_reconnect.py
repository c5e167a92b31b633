"""Finding 3: send budgets belong to the device (and account), not to the connection, and
connect attempts are limited per device and per address."""

from __future__ import annotations

from pathlib import Path

from tests.abuse.conn_support import ws_from
from tests.server.ws_kit import Peer, WsClient, open_ws, world


async def _send_until_closed(
    ws: WsClient, payloads: list[tuple[bytes, list[Peer]]], prefix: str, n: int
) -> int:
    """Send up to ``n`` messages; return how many were accepted before the socket closed."""
    accepted = 0
    for i in range(n):
        try:
            await ws.send_message(f"{prefix}{i}", payloads)
            frame = await ws.recv()
            while frame["type"] == "deliver":  # copies from the account's other device
                frame = await ws.recv()
        except Exception:
            return accepted
        if frame["type"] != "accepted":
            return accepted
        accepted += 1
    return accepted


async def test_reconnecting_does_not_refill_the_send_budget(tmp_path: Path) -> None:
    # Burst max(2 × 0.5, 20) = 20 sends, refilled at 0.5/s: 30 sends within a few seconds over
    # two connections are more than the device may make.
    limits = {"messages_per_second_per_device": 0.5}
    async with world(tmp_path, {"mallory": [1], "bob": [1]}, limits=limits) as w:
        mallory, bob = w["mallory", 1], w["bob", 1]
        async with open_ws(w.relay, mallory) as ws:
            assert await _send_until_closed(ws, [(b"hi", [bob])], "a", 15) == 15
        async with open_ws(w.relay, mallory) as ws:
            assert await _send_until_closed(ws, [(b"hi", [bob])], "b", 15) < 15
            assert await ws.closed() == (4429, "rate limit exceeded")


async def test_the_account_send_budget_is_shared_by_its_devices(tmp_path: Path) -> None:
    limits = {"messages_per_second_per_device": 1000, "messages_per_second_per_account": 0.5}
    async with world(tmp_path, {"mallory": [1, 2], "bob": [1]}, limits=limits) as w:
        m1, m2, bob = w["mallory", 1], w["mallory", 2], w["bob", 1]
        async with open_ws(w.relay, m1) as ws:
            assert await _send_until_closed(ws, [(b"hi", [bob]), (b"copy", [m2])], "a", 15) == 15
        async with open_ws(w.relay, m2) as ws:
            assert await _send_until_closed(ws, [(b"hi", [bob]), (b"copy", [m1])], "b", 15) < 15
            assert await ws.closed() == (4429, "rate limit exceeded")


async def test_connect_attempts_are_limited_per_device(tmp_path: Path) -> None:
    limits = {"ws_connects_per_minute_per_device": 3}
    async with world(tmp_path, {"mallory": [1]}, limits=limits) as w:
        for _ in range(3):
            async with open_ws(w.relay, w["mallory", 1]):
                pass
        async with open_ws(w.relay, None) as ws:
            await ws.send({"type": "auth", "token": w["mallory", 1].token})
            assert await ws.closed() == (4429, "too many connection attempts")


async def test_connect_attempts_are_limited_per_address(tmp_path: Path) -> None:
    limits = {"ws_connects_per_minute_per_address": 3}
    async with world(tmp_path, {"mallory": [1], "alice": [1]}, limits=limits) as w:
        for _ in range(3):
            async with ws_from(w.relay, None, "127.0.0.2"):
                pass
        async with ws_from(w.relay, None, "127.0.0.2") as ws:
            assert await ws.closed() == (4429, "too many connection attempts")
        # Another address is not affected.
        async with ws_from(w.relay, w["alice", 1], "127.0.0.3") as ws:
            await ws.send({"type": "ping"})
            await ws.expect("pong")
