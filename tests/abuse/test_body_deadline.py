"""A slowloris on the request body: a client that sends a head, then trickles its body, is
answered ``408 body_timeout`` and disconnected; a slow but steady upload still goes through.
The 408 is not lost to a reset when the client is still sending as it comes: the relay
half-closes and reads (and drops) what still arrives, for a bounded time and number of bytes,
before it closes the connection.

Real relay on loopback, raw sockets. The attacker plays ``127.0.0.2``.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import socket
import struct
import termios
from pathlib import Path

import pytest

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


def _tcp_state(writer: asyncio.StreamWriter) -> int:
    """The kernel's TCP state of the client socket (``tcp_info.tcpi_state``)."""
    sock = writer.get_extra_info("socket")
    return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0])


def _unacknowledged(writer: asyncio.StreamWriter) -> int:
    """Bytes written to the client socket that the relay's kernel has not acknowledged (nor
    answered with a reset)."""
    sock = writer.get_extra_info("socket")
    raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4)
    return int(struct.unpack("i", raw)[0])


TCP_CLOSE = 7  # reset
TCP_CLOSE_WAIT = 8  # the peer sent its FIN


async def _trickle_until_answered(writer: asyncio.StreamWriter) -> None:
    """Trickle body bytes, not reading, until the relay has answered and half-closed (its
    FIN is in: the 408 before it is waiting, unread, in this socket)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while _tcp_state(writer) != TCP_CLOSE_WAIT:
        assert loop.time() < deadline, "the relay never answered the trickle"
        writer.write(b"x")
        await writer.drain()
        await asyncio.sleep(0.05)


async def _still_half_open(writer: asyncio.StreamWriter) -> bool:
    """Wait until the relay's kernel acknowledged every byte written, or answered with a
    reset; True if the connection is still half-open (the relay's FIN in, no reset)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while _unacknowledged(writer) and _tcp_state(writer) != TCP_CLOSE:
        assert loop.time() < deadline
        await asyncio.sleep(0.01)
    return _tcp_state(writer) == TCP_CLOSE_WAIT


async def test_a_byte_still_trickling_in_after_the_408_is_not_answered_with_a_reset(
    tmp_path: Path,
) -> None:
    """The race that lost the 408 body under load, forced: the client, still trickling, sends
    one more byte after the relay answered and half-closed, before it reads the answer. A
    relay that had closed its socket answers that byte with a reset, and a client that learns
    of the reset before it has read the body loses it (asyncio's ``StreamReader`` raises the
    reset ahead of the bytes it holds: the empty 408 bodies seen under load); a lingering
    relay reads the byte and drops it, and the whole 408 is read."""
    async with world(tmp_path, {"alice": [1]}, limits=LIMITS) as w:
        reader, writer = await raw_connect(w.relay, "127.0.0.2")
        transport = writer.transport
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()  # the answer stays in the kernel until we read it
        writer.write(_head("/v1/auth/challenge", 100_000) + b"{")
        await _trickle_until_answered(writer)
        writer.write(b"x")  # still trickling as the answer arrived
        await writer.drain()
        assert await _still_half_open(writer), "the relay reset the connection"
        transport.resume_reading()
        status, body = await _response(reader)
        assert status == "HTTP/1.1 408 Request Timeout"
        assert body["error"] == "body_timeout"
        writer.close()


async def _sends_until_hung_up(writer: asyncio.StreamWriter, piece: bytes, pause: float) -> None:
    """Keep sending ``piece`` (every ``pause`` s) until the relay has closed the connection."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 120
    with pytest.raises((ConnectionResetError, BrokenPipeError)):
        while loop.time() < deadline:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(pause)


async def test_a_client_that_keeps_trickling_after_the_408_is_cut_off(tmp_path: Path) -> None:
    """The lingering is bounded in time: a client still trickling after the 408 is closed
    (``linger_timeout_seconds``), not held forever."""
    async with world(tmp_path, {"alice": [1]}, limits=LIMITS) as w:
        _, writer = await raw_connect(w.relay, "127.0.0.2")
        writer.write(_head("/v1/auth/challenge", 100_000) + b"{")
        await _trickle_until_answered(writer)
        await _sends_until_hung_up(writer, b"x", 0.05)
        writer.close()


async def test_a_longer_linger_timeout_keeps_a_trickling_client_past_the_default(
    tmp_path: Path,
) -> None:
    """``linger_timeout_seconds`` is honoured: with 300 s of lingering allowed, a client that
    trickles for 4 s after the 408 (twice the default) is not cut off — neither by the
    keep-alive timeout (1 s here), which does not apply to a lingering connection."""
    limits = {**LIMITS, "linger_timeout_seconds": 300.0, "keepalive_timeout_seconds": 1.0}
    async with world(tmp_path, {"alice": [1]}, limits=limits) as w:
        _, writer = await raw_connect(w.relay, "127.0.0.2")
        writer.write(_head("/v1/auth/challenge", 100_000) + b"{")
        await _trickle_until_answered(writer)
        loop = asyncio.get_running_loop()
        until = loop.time() + 4
        while loop.time() < until:
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.05)
        assert await _still_half_open(writer), "the relay cut the client off"
        writer.close()


async def test_a_client_that_floods_after_the_408_is_cut_off_by_bytes(tmp_path: Path) -> None:
    """The lingering is bounded in bytes: with 300 s of lingering allowed, a client that
    sends fast after the 408 is closed once ``max_linger_bytes`` (default 256 KiB) were
    dropped."""
    limits = {**LIMITS, "linger_timeout_seconds": 300.0}
    async with world(tmp_path, {"alice": [1]}, limits=limits) as w:
        _, writer = await raw_connect(w.relay, "127.0.0.2")
        writer.write(_head("/v1/auth/challenge", 100_000_000) + b"{")
        await _trickle_until_answered(writer)
        await _sends_until_hung_up(writer, b"x" * 65536, 0.01)
        writer.close()


async def test_a_smaller_max_linger_bytes_cuts_a_client_off_after_that_many_bytes(
    tmp_path: Path,
) -> None:
    """``max_linger_bytes`` is honoured: with 4 KiB allowed (and 300 s), one burst of 4 KiB + 1
    after the 408 ends the lingering; the client's next byte is answered with a reset (at the
    default 256 KiB the few bytes probed here would be read and dropped for 300 s)."""
    limits = {**LIMITS, "linger_timeout_seconds": 300.0, "max_linger_bytes": 4096}
    async with world(tmp_path, {"alice": [1]}, limits=limits) as w:
        _, writer = await raw_connect(w.relay, "127.0.0.2")
        writer.write(_head("/v1/auth/challenge", 100_000) + b"{")
        await _trickle_until_answered(writer)
        writer.write(b"x" * 4097)
        await writer.drain()
        await _sends_until_hung_up(writer, b"x", 0.2)
        writer.close()
