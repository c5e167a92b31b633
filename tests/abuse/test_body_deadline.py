"""A slowloris on the request body: a client that sends a head, then trickles its body, is
answered ``408 body_timeout`` and disconnected; a slow but steady upload still goes through.

Real relay on loopback, raw sockets. The attacker plays ``127.0.0.2``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from server.db.models_delivery import Attachment
from tests.abuse.conn_support import http_from, hung_up, raw_connect
from tests.server.relay_harness import auth_header
from tests.server.ws_kit import world

#: 1 s of waiting for free, then at least 2 KiB/s on average.
LIMITS = {"body_timeout_seconds": 1.0, "min_body_bytes_per_second": 2048}


async def _trickle(writer: asyncio.StreamWriter, stop: asyncio.Event) -> None:
    """One body byte every 0.3 s (about 3 B/s) until stopped or disconnected."""
    while not stop.is_set():
        try:
            writer.write(b"x")
            await writer.drain()
        except (ConnectionResetError, BrokenPipeError):
            return
        await asyncio.sleep(0.3)


async def _response(reader: asyncio.StreamReader) -> tuple[str, dict[str, str]]:
    """The status line and JSON body of one response (read until the peer closes)."""
    raw = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), 30):
            raw += chunk
    except ConnectionResetError:
        pass
    head, _, body = raw.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), json.loads(body)


def _head(path: str, length: int, token: str | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: relay", f"Content-Length: {length}"]
    kind = "application/json" if token is None else "application/octet-stream"
    lines.append(f"Content-Type: {kind}")
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_a_trickled_body_gets_408_and_the_connection_closes_others_are_served(
    tmp_path: Path,
) -> None:
    async with world(tmp_path, {"alice": [1], "bob": [1]}, limits=LIMITS) as w:
        stop = asyncio.Event()
        attackers = []
        for path, token in (
            ("/v1/auth/challenge", None),  # a JSON endpoint (body read before the app)
            ("/v1/attachments", w["alice", 1].token),  # a streaming upload
        ):
            reader, writer = await raw_connect(w.relay, "127.0.0.2")
            writer.write(_head(path, 100_000, token) + b"{")
            await writer.drain()
            attackers.append((reader, writer, asyncio.create_task(_trickle(writer, stop))))
        # Meanwhile another client is served as usual.
        async with http_from(w.relay, "127.0.0.3") as http:
            resp = await http.post("/v1/auth/challenge", json={"username": "bob", "device_id": 1})
            assert resp.status_code == 200
            resp = await http.post(
                "/v1/attachments", content=b"y" * 4096, headers=auth_header(w["bob", 1].token)
            )
            assert resp.status_code == 201
        for reader, writer, _ in attackers:
            status, body = await _response(reader)
            assert status == "HTTP/1.1 408 Request Timeout"
            assert body["error"] == "body_timeout"
            assert "2048 bytes" in body["message"]
            assert await hung_up(reader, 10)
            writer.close()
        stop.set()
        await asyncio.gather(*(task for _, _, task in attackers))
        assert await w.count(Attachment) == 1  # bob's; nothing of the trickled upload
        blobs = w.relay.settings.data_dir.resolve() / "attachments"
        assert len([p for p in blobs.rglob("*") if p.is_file()]) == 1
        async with http_from(w.relay, "127.0.0.3") as http:
            metrics = (await http.get("/metrics")).text
        assert 'vox_connections_refused_total{reason="body_timeout"} 2.0' in metrics


async def test_a_slow_but_steady_upload_outlasting_the_grace_goes_through(
    tmp_path: Path,
) -> None:
    blob = bytes(range(256)) * 48  # 12 KiB at about 4 KiB/s: ~3 s, three times the grace
    async with world(tmp_path, {"alice": [1]}, limits=LIMITS) as w:
        reader, writer = await raw_connect(w.relay)
        writer.write(_head("/v1/attachments", len(blob), w["alice", 1].token))
        for start in range(0, len(blob), 1024):
            writer.write(blob[start : start + 1024])
            await writer.drain()
            await asyncio.sleep(0.25)
        line = await asyncio.wait_for(reader.readline(), 30)
        assert line.startswith(b"HTTP/1.1 201"), line
        writer.close()
        assert await w.count(Attachment) == 1
