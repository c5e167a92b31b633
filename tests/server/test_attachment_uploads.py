"""Resumable attachment uploads (docs/protocol-ws.md §9.1) through a real relay: chunks at
offsets, repeats, mismatches answered with the offset to resume from, a chunk cut off midway,
limits (chunk size, declared size, concurrent uploads, quotas), finish, expiry, and the
uploader deleting a finished attachment (§9.2) — on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.db.models_delivery import Attachment, AttachmentUpload
from tests.server.relay_harness import auth_header
from tests.server.ws_kit import World, world

CHUNK = 64 * 1024
LIMITS = {"max_upload_chunk_bytes": CHUNK, "max_attachment_bytes": 16 * CHUNK}
#: With these: 2 unfinished uploads per device, 20 chunks of attachments per device.
QUOTA_LIMITS = {
    **LIMITS,
    "max_concurrent_uploads_per_device": 2,
    "max_attachment_bytes_per_device": 20 * CHUNK,
}


def _parts(w: World) -> list[Path]:
    root = w.relay.settings.data_dir.resolve() / "attachments" / "uploads"
    return list(root.glob("*.part")) if root.exists() else []


async def _create(http: httpx.AsyncClient, token: dict[str, str], size: int) -> dict[str, Any]:
    resp = await http.post("/v1/attachments/uploads", json={"size": size}, headers=token)
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def _patch(
    http: httpx.AsyncClient, token: dict[str, str], upload: str, offset: int, data: bytes
) -> httpx.Response:
    return await http.patch(
        f"/v1/attachments/uploads/{upload}",
        content=data,
        headers={**token, "Upload-Offset": str(offset)},
    )


async def _chunked_upload_flow(w: World) -> None:
    """The whole protocol on one relay (shared by the SQLite and PostgreSQL tests)."""
    blob = os.urandom(2 * CHUNK + 1000)
    token = auth_header(w["alice", 1].token)
    async with w.relay.client() as http:
        up = await _create(http, token, len(blob))
        uid = up["upload_id"]
        assert len(uid) == 43 and up["offset"] == 0 and up["size"] == len(blob)
        assert up["chunk_bytes"] == CHUNK and up["attachment"] is None
        first = await _patch(http, token, uid, 0, blob[:CHUNK])
        assert first.status_code == 200, first.text
        assert first.json()["offset"] == CHUNK and first.headers["upload-offset"] == str(CHUNK)
        # A repeat of a chunk the relay has (its answer was lost): nothing changes.
        again = await _patch(http, token, uid, 0, blob[:CHUNK])
        assert again.status_code == 200 and again.json()["offset"] == CHUNK
        # A gap, or a chunk straddling the offset: 409 with the offset to resume from.
        for offset, data in (
            (2 * CHUNK, blob[2 * CHUNK :]),
            (CHUNK - 10, blob[CHUNK - 10 :][:100]),
        ):
            gap = await _patch(http, token, uid, offset, data)
            assert gap.status_code == 409 and gap.json()["error"] == "offset_mismatch"
            assert gap.headers["upload-offset"] == str(CHUNK)
        early = await http.post(f"/v1/attachments/uploads/{uid}/finish", headers=token)
        assert early.status_code == 409 and early.json()["error"] == "upload_incomplete"
        assert early.headers["upload-offset"] == str(CHUNK)
        state = await http.get(f"/v1/attachments/uploads/{uid}", headers=token)
        assert state.status_code == 200 and state.json()["offset"] == CHUNK
        # Another device does not see it.
        other = await http.get(
            f"/v1/attachments/uploads/{uid}", headers=auth_header(w["bob", 1].token)
        )
        assert other.status_code == 404 and other.json()["error"] == "unknown_upload"
        for offset in (CHUNK, 2 * CHUNK):
            resp = await _patch(http, token, uid, offset, blob[offset : offset + CHUNK])
            assert resp.status_code == 200, resp.text
        done = await http.post(f"/v1/attachments/uploads/{uid}/finish", headers=token)
        assert done.status_code == 201, done.text
        info = done.json()
        assert info["size"] == len(blob) and len(info["id"]) == 43 and info["id"] != uid
        # Finishing again (the answer was lost) gives the same attachment.
        repeat = await http.post(f"/v1/attachments/uploads/{uid}/finish", headers=token)
        assert repeat.status_code == 200 and repeat.json() == info
        state = await http.get(f"/v1/attachments/uploads/{uid}", headers=token)
        assert state.json()["attachment"] == info
        late = await _patch(http, token, uid, 0, blob[:CHUNK])
        assert late.status_code == 409 and late.json()["error"] == "upload_finished"
        got = await http.get(
            f"/v1/attachments/{info['id']}", headers=auth_header(w["bob", 1].token)
        )
        assert got.status_code == 200 and got.content == blob
    assert await w.count(Attachment) == 1
    assert _parts(w) == []


async def _sweep_flow(w: World) -> None:
    """An abandoned upload is swept with its bytes when it expires."""
    token = auth_header(w["alice", 1].token)
    async with w.relay.client() as http:
        up = await _create(http, token, 3 * CHUNK)
        assert (await _patch(http, token, up["upload_id"], 0, b"a" * CHUNK)).status_code == 200
        service = w.relay.state.attachments
        await service.sweep(now=up["expires_at"] - 1)
        assert [p.stem for p in _parts(w)] == [up["upload_id"]]
        await service.sweep(now=up["expires_at"])
        assert _parts(w) == []
        assert await w.count(AttachmentUpload) == 0


async def test_a_chunked_upload_resumes_finishes_and_downloads(tmp_path: Path) -> None:
    async with world(tmp_path, {"alice": [1, 2], "bob": [1]}, limits=LIMITS) as w:
        await _chunked_upload_flow(w)


async def test_abandoned_uploads_are_swept_with_their_bytes(tmp_path: Path) -> None:
    async with world(tmp_path, {"alice": [1]}, limits=LIMITS) as w:
        await _sweep_flow(w)


@pytest.mark.postgres
async def test_chunked_uploads_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    async with world(
        tmp_path, {"alice": [1], "bob": [1]}, database_url=postgres_url, limits=QUOTA_LIMITS
    ) as w:
        await _chunked_upload_flow(w)
        await _sweep_flow(w)
        await _quota_flow(w, quota=20 * CHUNK)


async def test_chunk_and_size_limits(tmp_path: Path) -> None:
    async with world(tmp_path, {"alice": [1]}, limits=LIMITS) as w, w.relay.client() as http:
        token = auth_header(w["alice", 1].token)
        huge = await http.post(
            "/v1/attachments/uploads", json={"size": 16 * CHUNK + 1}, headers=token
        )
        assert huge.status_code == 413 and huge.json()["error"] == "too_large"
        empty = await http.post("/v1/attachments/uploads", json={"size": 0}, headers=token)
        assert empty.status_code == 422
        # Its JSON body is limited like any other (the upload routes stream only chunks).
        padded = await http.post(
            "/v1/attachments/uploads",
            content=b'{"size": 1' + b" " * (2 * 1024 * 1024) + b"}",
            headers={**token, "Content-Type": "application/json"},
        )
        assert padded.status_code == 413 and padded.json()["error"] == "body_too_large"
        uid = (await _create(http, token, 2 * CHUNK + 2))["upload_id"]
        big = await _patch(http, token, uid, 0, b"x" * (CHUNK + 1))
        assert big.status_code == 413 and big.json()["error"] == "too_large"
        assert (await _patch(http, token, uid, 0, b"x" * CHUNK)).status_code == 200
        assert (await _patch(http, token, uid, CHUNK, b"x" * CHUNK)).status_code == 200
        past = await _patch(http, token, uid, 2 * CHUNK, b"x" * 3)
        assert past.status_code == 400 and past.json()["error"] == "beyond_size"
        bad = await http.patch(
            f"/v1/attachments/uploads/{uid}",
            content=b"x",
            headers={**token, "Upload-Offset": "-1"},
        )
        assert bad.status_code == 400
        assert (await http.get(f"/v1/attachments/uploads/{uid}")).status_code == 401
        unknown = await http.get("/v1/attachments/uploads/" + "A" * 43, headers=token)
        assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_upload"
        # Abandoning it deletes its bytes at once.
        assert (
            await http.delete(f"/v1/attachments/uploads/{uid}", headers=token)
        ).status_code == 204
        assert _parts(w) == []


async def test_a_chunk_cut_off_midway_leaves_the_offset_where_it_was(tmp_path: Path) -> None:
    async with world(tmp_path, {"alice": [1]}, limits=LIMITS) as w, w.relay.client() as http:
        token = auth_header(w["alice", 1].token)
        blob = os.urandom(CHUNK + 500)
        uid = (await _create(http, token, len(blob)))["upload_id"]
        _reader, writer = await asyncio.open_connection("127.0.0.1", w.relay.port)
        head = (
            f"PATCH /v1/attachments/uploads/{uid} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {w['alice', 1].token}\r\nUpload-Offset: 0\r\n"
            f"Content-Type: application/offset+octet-stream\r\nContent-Length: {CHUNK}\r\n\r\n"
        )
        writer.write(head.encode() + blob[:30_000])
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.close()  # the connection drops in the middle of the chunk
        await writer.wait_closed()
        for _ in range(100):  # the relay notices the drop, then cuts the part back
            state = (await http.get(f"/v1/attachments/uploads/{uid}", headers=token)).json()
            part = _parts(w)
            if state["offset"] == 0 and part and part[0].stat().st_size == 0:
                break
            await asyncio.sleep(0.05)
        assert state["offset"] == 0
        assert [p.stat().st_size for p in _parts(w)] == [0]
        # Resume from the relay's offset.
        assert (await _patch(http, token, uid, 0, blob[:CHUNK])).status_code == 200
        assert (await _patch(http, token, uid, CHUNK, blob[CHUNK:])).status_code == 200
        info = (await http.post(f"/v1/attachments/uploads/{uid}/finish", headers=token)).json()
        got = await http.get(f"/v1/attachments/{info['id']}", headers=token)
        assert got.content == blob


async def test_the_same_chunk_sent_twice_at_once_is_written_once(tmp_path: Path) -> None:
    async with world(tmp_path, {"alice": [1]}, limits=LIMITS) as w, w.relay.client() as http:
        token = auth_header(w["alice", 1].token)
        blob = os.urandom(2 * CHUNK)
        uid = (await _create(http, token, len(blob)))["upload_id"]
        both = await asyncio.gather(*(_patch(http, token, uid, 0, blob[:CHUNK]) for _ in range(2)))
        assert [r.status_code for r in both] == [200, 200]
        assert [r.json()["offset"] for r in both] == [CHUNK, CHUNK]
        assert (await _patch(http, token, uid, CHUNK, blob[CHUNK:])).status_code == 200
        info = (await http.post(f"/v1/attachments/uploads/{uid}/finish", headers=token)).json()
        assert (await http.get(f"/v1/attachments/{info['id']}", headers=token)).content == blob


async def _quota_flow(w: World, quota: int) -> None:
    """Unfinished uploads reserve their declared size; a device has at most 2 open."""
    token = auth_header(w["bob", 1].token)
    async with w.relay.client() as http:
        a = await _create(http, token, 10 * CHUNK)
        b = await _create(http, token, 5 * CHUNK)
        third = await http.post("/v1/attachments/uploads", json={"size": 1}, headers=token)
        assert third.status_code == 429 and third.json()["error"] == "too_many_uploads"
        assert (
            await http.delete(f"/v1/attachments/uploads/{b['upload_id']}", headers=token)
        ).status_code == 204
        # 10 chunks reserved by a: 11 more do not fit the quota of 20, 10 do.
        over = await http.post(
            "/v1/attachments/uploads", json={"size": quota - 10 * CHUNK + 1}, headers=token
        )
        assert over.status_code == 507 and over.json()["error"] == "quota_exceeded"
        one_shot = await http.post(
            "/v1/attachments", content=b"q" * (quota - 10 * CHUNK + 1), headers=token
        )
        assert one_shot.status_code == 507  # the one-shot upload sees the reservation too
        await _create(http, token, quota - 10 * CHUNK)
        assert a["offset"] == 0


async def test_concurrent_uploads_and_quotas_count_unfinished_uploads(tmp_path: Path) -> None:
    async with world(tmp_path, {"bob": [1]}, limits=QUOTA_LIMITS) as w:
        await _quota_flow(w, quota=20 * CHUNK)


async def test_bytes_past_the_offset_left_by_a_crash_are_overwritten(tmp_path: Path) -> None:
    """A relay that wrote a chunk but stopped before recording the new offset leaves bytes
    past the offset in the part file; the chunk sent again (here a shorter one) replaces
    them, and the attachment is exactly what the client sent."""
    async with world(tmp_path, {"alice": [1]}, limits=LIMITS) as w, w.relay.client() as http:
        token = auth_header(w["alice", 1].token)
        blob = os.urandom(CHUNK + 100)
        uid = (await _create(http, token, len(blob)))["upload_id"]
        assert (await _patch(http, token, uid, 0, blob[:CHUNK])).status_code == 200
        [part] = _parts(w)
        with part.open("ab") as fh:
            fh.write(b"residue of a chunk the relay never recorded" * 100)
        assert (await _patch(http, token, uid, CHUNK, blob[CHUNK:])).status_code == 200
        done = await http.post(f"/v1/attachments/uploads/{uid}/finish", headers=token)
        assert done.status_code == 201 and done.json()["size"] == len(blob)
        got = await http.get(f"/v1/attachments/{done.json()['id']}", headers=token)
        assert got.content == blob


async def test_an_upload_whose_bytes_were_lost_is_refused_as_unknown(tmp_path: Path) -> None:
    """Part files gone or short (a restore of an older copy of the data directory): the
    relay says so (404 ``unknown_upload``, start again) instead of storing a broken blob."""
    async with world(tmp_path, {"alice": [1]}, limits=LIMITS) as w, w.relay.client() as http:
        token = auth_header(w["alice", 1].token)
        short = (await _create(http, token, CHUNK))["upload_id"]
        assert (await _patch(http, token, short, 0, b"s" * CHUNK)).status_code == 200
        gone = (await _create(http, token, 2 * CHUNK))["upload_id"]
        assert (await _patch(http, token, gone, 0, b"g" * CHUNK)).status_code == 200
        parts = {p.stem: p for p in _parts(w)}
        parts[short].write_bytes(b"s" * 100)
        parts[gone].unlink()
        finish = await http.post(f"/v1/attachments/uploads/{short}/finish", headers=token)
        assert finish.status_code == 404 and finish.json()["error"] == "unknown_upload"
        more = await _patch(http, token, gone, CHUNK, b"g" * CHUNK)
        assert more.status_code == 404 and more.json()["error"] == "unknown_upload"
        assert await w.count(Attachment) == 0 and await w.count(AttachmentUpload) == 0
        assert _parts(w) == []


def _blobs(w: World) -> list[str]:
    root = w.relay.settings.data_dir.resolve() / "attachments"
    return [p.name for p in root.rglob("*") if p.is_file() and "uploads" not in p.parts]


async def _delete_flow(w: World) -> None:
    """Only the uploading device deletes an attachment (one-shot or finished upload); its
    bytes go at once and its quota is free again; deleting again is 204."""
    token = auth_header(w["alice", 1].token)
    async with w.relay.client() as http:
        full = await http.post("/v1/attachments", content=b"f" * 16 * CHUNK, headers=token)
        assert full.status_code == 201, full.text
        up = await _create(http, token, 4 * CHUNK)
        assert (await _patch(http, token, up["upload_id"], 0, b"u" * CHUNK)).status_code == 200
        # 16 + 4 reserved chunks: the quota of 20 is used up.
        assert (await http.post("/v1/attachments", content=b"x", headers=token)).status_code == 507
        blob_id = full.json()["id"]
        assert any(blob_id in name for name in _blobs(w))
        for other in (w["bob", 1], w["alice", 2]):
            refused = await http.delete(
                f"/v1/attachments/{blob_id}", headers=auth_header(other.token)
            )
            assert refused.status_code == 403, refused.text
            assert refused.json()["error"] == "not_uploader"
            assert "uploaded" in refused.json()["message"]
        weird = await http.delete("/v1/attachments/not-an-id", headers=token)
        assert weird.status_code == 404 and weird.json()["error"] == "unknown_attachment"
        assert (await http.delete(f"/v1/attachments/{blob_id}")).status_code == 401

        assert (await http.delete(f"/v1/attachments/{blob_id}", headers=token)).status_code == 204
        assert not any(blob_id in name for name in _blobs(w))
        gone = await http.get(f"/v1/attachments/{blob_id}", headers=token)
        assert gone.status_code == 404 and gone.json()["error"] == "unknown_attachment"
        again = await http.delete(f"/v1/attachments/{blob_id}", headers=token)
        assert again.status_code == 204  # idempotent: nothing left to delete
        # The quota is free again: the upload in progress fits and finishes.
        for offset in range(CHUNK, 4 * CHUNK, CHUNK):
            resp = await _patch(http, token, up["upload_id"], offset, b"u" * CHUNK)
            assert resp.status_code == 200, resp.text
        done = await http.post(f"/v1/attachments/uploads/{up['upload_id']}/finish", headers=token)
        assert done.status_code == 201, done.text
        finished = done.json()["id"]
        assert (await http.delete(f"/v1/attachments/{finished}", headers=token)).status_code == 204
        # With it goes the record of the upload that made it.
        state = await http.get(f"/v1/attachments/uploads/{up['upload_id']}", headers=token)
        assert state.status_code == 404 and state.json()["error"] == "unknown_upload"
        assert (await http.post("/v1/attachments", content=b"y", headers=token)).status_code == 201
    assert await w.count(AttachmentUpload) == 0
    assert _blobs(w) != [] and not any(finished in name for name in _blobs(w))


async def test_the_uploading_device_deletes_its_attachment_and_frees_its_quota(
    tmp_path: Path,
) -> None:
    async with world(tmp_path, {"alice": [1, 2], "bob": [1]}, limits=QUOTA_LIMITS) as w:
        await _delete_flow(w)


@pytest.mark.postgres
async def test_deleting_attachments_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    async with world(
        tmp_path, {"alice": [1, 2], "bob": [1]}, database_url=postgres_url, limits=QUOTA_LIMITS
    ) as w:
        await _delete_flow(w)
