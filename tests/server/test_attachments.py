"""Attachments through a real relay: streaming upload and download, auth, size limit, truncated
uploads, unguessable ids, expiry."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

from server.db.models_delivery import Attachment
from tests.server.relay_harness import auth_header
from tests.server.ws_kit import World, world

LIMIT = 64 * 1024


def _files(w: World) -> list[Path]:
    root = w.relay.settings.data_dir.resolve() / "attachments"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


async def test_upload_then_download_streams_the_exact_bytes(tmp_path: Path) -> None:
    async with world(tmp_path, {"alice": [1], "bob": [1]}) as w, w.relay.client() as http:
        blob = os.urandom(300_000)
        resp = await http.post(
            "/v1/attachments", content=blob, headers=auth_header(w["alice", 1].token)
        )
        assert resp.status_code == 201, resp.text
        info = resp.json()
        assert info["size"] == len(blob) and len(info["id"]) == 43  # 256 random bits
        got = await http.get(
            f"/v1/attachments/{info['id']}", headers=auth_header(w["bob", 1].token)
        )
        assert got.status_code == 200 and got.content == blob
        assert got.headers["content-length"] == str(len(blob))
        # Chunked upload (no Content-Length) works too.

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(5):
                yield bytes([i]) * 10_000

        resp = await http.post(
            "/v1/attachments", content=chunks(), headers=auth_header(w["alice", 1].token)
        )
        assert resp.status_code == 201 and resp.json()["size"] == 50_000
        assert resp.json()["id"] != info["id"]


async def test_attachments_need_a_token_and_a_real_id(tmp_path: Path) -> None:
    async with world(tmp_path, {"alice": [1]}) as w, w.relay.client() as http:
        assert (await http.post("/v1/attachments", content=b"x")).status_code == 401
        token = auth_header(w["alice", 1].token)
        resp = await http.post("/v1/attachments", content=b"x" * 10, headers=token)
        blob_id = resp.json()["id"]
        assert (await http.get(f"/v1/attachments/{blob_id}")).status_code == 401
        missing = await http.get("/v1/attachments/" + "A" * 43, headers=token)
        assert missing.status_code == 404 and missing.json()["error"] == "unknown_attachment"
        weird = await http.get("/v1/attachments/..%2F..%2Fetc", headers=token)
        assert weird.status_code == 404


async def test_uploads_over_the_limit_get_413_and_nothing_is_kept(tmp_path: Path) -> None:
    async with world(tmp_path, {"alice": [1]}, limits={"max_attachment_bytes": LIMIT}) as w:
        token = auth_header(w["alice", 1].token)
        async with w.relay.client() as http:
            declared = await http.post("/v1/attachments", content=b"x" * (LIMIT + 1), headers=token)
            assert declared.status_code == 413 and declared.json()["error"] == "too_large"

            async def chunks() -> AsyncIterator[bytes]:
                for _ in range(10):
                    yield b"y" * (LIMIT // 4)

            streamed = await http.post("/v1/attachments", content=chunks(), headers=token)
            assert streamed.status_code == 413
            ok = await http.post("/v1/attachments", content=b"z" * LIMIT, headers=token)
            assert ok.status_code == 201
        assert await w.count(Attachment) == 1
        assert len(_files(w)) == 1


async def test_a_truncated_upload_keeps_nothing(tmp_path: Path) -> None:
    async with world(tmp_path, {"alice": [1]}) as w:
        _reader, writer = await asyncio.open_connection("127.0.0.1", w.relay.port)
        head = (
            "POST /v1/attachments HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {w['alice', 1].token}\r\n"
            "Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n"
        )
        writer.write(head.encode() + b"a" * 30_000)
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.close()  # disconnect before the declared length arrived
        await writer.wait_closed()
        await asyncio.sleep(0.5)
        assert await w.count(Attachment) == 0
        assert _files(w) == []


async def test_expired_attachments_are_swept(tmp_path: Path) -> None:
    async with world(tmp_path, {"alice": [1]}) as w, w.relay.client() as http:
        token = auth_header(w["alice", 1].token)
        info = (await http.post("/v1/attachments", content=b"q" * 100, headers=token)).json()
        service = w.relay.state.attachments
        assert await service.sweep(now=info["expires_at"] - 1) == 0
        assert await service.sweep(now=info["expires_at"]) == 1
        assert (await http.get(f"/v1/attachments/{info['id']}", headers=token)).status_code == 404
        assert _files(w) == []


def _open_fds() -> dict[int, str]:
    """This process's open file descriptors and what they point to."""
    out: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return out


async def _abort_download(port: int, path: str, token: str, read: int) -> None:
    """GET ``path`` over a raw socket, read ``read`` bytes, then reset the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
    writer.write(request.encode())
    await writer.drain()
    await reader.readexactly(read)
    writer.transport.abort()  # RST mid-stream, like a client that was killed
    await asyncio.sleep(0)


async def test_a_download_aborted_mid_stream_closes_the_blob_file(tmp_path: Path) -> None:
    size = 16 * 1024 * 1024
    async with world(tmp_path, {"alice": [1]}, limits={"max_attachment_bytes": size}) as w:
        root = str(w.relay.settings.data_dir.resolve() / "attachments")
        token = w["alice", 1].token
        blob = os.urandom(size)
        async with w.relay.client() as http:
            resp = await http.post("/v1/attachments", content=blob, headers=auth_header(token))
            assert resp.status_code == 201, resp.text
            blob_id = resp.json()["id"]
            baseline = set(_open_fds())
            for read in (200_000, 1_000_000, 3_000_000):
                await _abort_download(w.relay.port, f"/v1/attachments/{blob_id}", token, read)
            # No garbage collection here: the relay must close the file itself, promptly.
            await _blob_files_closed(root, baseline)
            got = await http.get(f"/v1/attachments/{blob_id}", headers=auth_header(token))
            assert got.status_code == 200 and got.content == blob
        # The complete download's file is closed too (just after its last bytes went out).
        await _blob_files_closed(root)


async def _blob_files_closed(root: str, baseline: set[int] | None = None) -> None:
    """Wait (up to 5 s) until no file under ``root`` is open in this process and, with a
    ``baseline``, no descriptor beyond it is."""
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        fds = _open_fds()
        blob_files = [p for p in fds.values() if p.startswith(root)]
        if not blob_files and (baseline is None or set(fds) <= baseline):
            return
        assert asyncio.get_running_loop().time() < deadline, (blob_files, baseline, fds)
        await asyncio.sleep(0.05)
