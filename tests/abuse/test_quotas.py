"""Finding 4 (disk): every byte a client can make the relay store has a quota.

Measured before: one device stored 30 × 10 MiB attachments in 1.0 s (no per-device or global
quota), a queue could hold 10,000 × 256 KiB ≈ 2.4 GiB per device, nothing watched the free
disk space, and one address registered 651 accounts in 5 s. Each test runs a real relay
(uvicorn on loopback) with small configured limits.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.db.models_delivery import Attachment, QueueEntry
from tests.server.relay_harness import TestAccount, auth_header, make_settings, running_relay
from tests.server.ws_kit import delivery_app, open_ws, payload, world


async def _upload(http: httpx.AsyncClient, token: str, body: bytes | AsyncIterator[bytes]) -> Any:
    return await http.post(
        "/v1/attachments",
        content=body,
        headers={**auth_header(token), "Content-Type": "application/octet-stream"},
    )


async def _chunked(data: bytes, size: int = 256) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _blob_files(tmp_path: Path) -> list[Path]:
    root = tmp_path / "vox-data" / "attachments"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


async def test_a_device_cannot_store_more_attachment_bytes_than_its_quota(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        limits={"max_attachment_bytes_per_device": 3000, "max_attachment_bytes_total": 100_000},
    )
    async with running_relay(settings, app=delivery_app(settings)) as relay:
        async with relay.client() as http:
            alice = await TestAccount.new("alice").register_and_login(http)
            bob = await TestAccount.new("bob").register_and_login(http)
            for _ in range(3):
                assert (await _upload(http, alice, os.urandom(1000))).status_code == 201
            # With Content-Length: refused before a byte is stored.
            over = await _upload(http, alice, os.urandom(1000))
            assert over.status_code == 507, over.text
            assert over.json()["error"] == "quota_exceeded"
            # Chunked (no Content-Length): the stream is cut off at the quota.
            chunked = await _upload(http, alice, _chunked(os.urandom(1000)))
            assert chunked.status_code == 507, chunked.text
            assert chunked.json()["error"] == "quota_exceeded"
            # Another device's quota is its own.
            assert (await _upload(http, bob, os.urandom(1000))).status_code == 201
        async with relay.state.sessions() as session:
            from sqlalchemy import func, select

            rows = (await session.execute(select(func.count()).select_from(Attachment))).scalar()
        assert rows == 4
        assert len(_blob_files(tmp_path)) == 4  # nothing of the refused uploads is kept


async def test_a_partly_used_quota_cuts_off_a_chunked_upload_that_does_not_fit(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, limits={"max_attachment_bytes_per_device": 2500})
    async with (
        running_relay(settings, app=delivery_app(settings)) as relay,
        relay.client() as http,
    ):
        alice = await TestAccount.new("alice").register_and_login(http)
        assert (await _upload(http, alice, os.urandom(2000))).status_code == 201
        cut = await _upload(http, alice, _chunked(os.urandom(1000)))
        assert cut.status_code == 507 and cut.json()["error"] == "quota_exceeded"
        assert (await _upload(http, alice, _chunked(os.urandom(500)))).status_code == 201
    assert len(_blob_files(tmp_path)) == 2


async def test_the_relay_stores_no_more_attachment_bytes_than_its_total(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        limits={"max_attachment_bytes_per_device": 2000, "max_attachment_bytes_total": 3000},
    )
    async with (
        running_relay(settings, app=delivery_app(settings)) as relay,
        relay.client() as http,
    ):
        tokens = [
            await TestAccount.new(name).register_and_login(http)
            for name in ("alice", "bob", "carol")
        ]
        assert (await _upload(http, tokens[0], os.urandom(1500))).status_code == 201
        assert (await _upload(http, tokens[1], os.urandom(1500))).status_code == 201
        full = await _upload(http, tokens[2], os.urandom(100))
        assert full.status_code == 507
        assert full.json()["error"] == "insufficient_storage"


async def test_a_device_queue_holds_no_more_payload_bytes_than_its_limit(tmp_path: Path) -> None:
    limits = {
        "max_ciphertext_bytes": 1024,
        "max_queue_bytes": 4096,
        "queue_share_per_sender": 1.0,
        "messages_per_second_per_device": 10_000.0,
    }
    async with world(tmp_path, {"alice": [1], "bob": [1]}, limits=limits) as w:
        bob = w["bob", 1]
        async with open_ws(w.relay, w["alice", 1]) as ws:
            for n in range(4):
                await ws.send_message(f"m{n}", [(payload(1000), [bob])])
                assert (await ws.expect("accepted"))["id"] == f"m{n}"
            await ws.send_message("m4", [(payload(1000), [bob])])
            refused = await ws.expect("error")
            assert refused["code"] == "queue_full"
            assert refused["devices"] == [bob.ref]
            # A small one still fits the bytes left.
            await ws.send_message("m5", [(payload(90), [bob])])
            await ws.expect("accepted")
        assert await w.count(QueueEntry) == 5
        # Bob drains his queue: room again.
        async with open_ws(w.relay, bob) as bob_ws:
            seqs = [(await bob_ws.expect("deliver"))["seq"] for _ in range(5)]
            await bob_ws.send({"type": "ack", "seqs": seqs})
            await w.wait_count(QueueEntry, 0)
        async with open_ws(w.relay, w["alice", 1]) as ws:
            await ws.send_message("m6", [(payload(1000), [bob])])
            await ws.expect("accepted")


async def test_below_the_free_disk_watermark_uploads_and_sends_are_refused(
    tmp_path: Path,
) -> None:
    async with world(tmp_path, {"alice": [1], "bob": [1]}) as w:
        disk = w.relay.state.disk
        free = {"bytes": 10 * 2**30}
        disk.free_bytes = lambda: free["bytes"]
        disk.refresh()
        alice, bob = w["alice", 1], w["bob", 1]
        async with w.relay.client() as http, open_ws(w.relay, alice) as ws:
            assert (await _upload(http, alice.token, b"x" * 100)).status_code == 201
            await ws.send_message("m1", [(payload(), [bob])])
            await ws.expect("accepted")

            free["bytes"] = settings_watermark(w.relay.settings) - 1
            disk.refresh()
            low = await _upload(http, alice.token, b"x" * 100)
            assert low.status_code == 507
            assert low.json() == {
                "error": "insufficient_storage",
                "message": "the relay is low on storage; nothing was stored; retry later",
            }
            await ws.send_message("m2", [(payload(), [bob])])
            refused = await ws.expect("error")
            assert (refused["id"], refused["code"]) == ("m2", "insufficient_storage")
            # A send already accepted is still answered as accepted (de-duplication).
            await ws.send_message("m1", [(payload(), [bob])])
            assert (await ws.expect("accepted"))["id"] == "m1"
            # Ephemeral sends store nothing: they go on.
            await ws.send_message("t1", [(payload(), [bob])], ephemeral=True)
            await ws.expect("accepted")
            assert await w.count(QueueEntry) == 1

            free["bytes"] = 10 * 2**30
            disk.refresh()
            await ws.send_message("m2", [(payload(), [bob])])
            assert (await ws.expect("accepted"))["id"] == "m2"
            assert (await _upload(http, alice.token, b"x" * 100)).status_code == 201


def settings_watermark(settings: Any) -> int:
    """The configured free-disk watermark."""
    value: int = settings.limits.min_free_disk_bytes
    return value


async def test_one_address_cannot_register_accounts_without_bound(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, limits={"registrations_per_hour_per_ip": 3})
    async with running_relay(settings) as relay, relay.client() as http:
        for name in ("alice", "bob", "carol"):
            assert (await TestAccount.new(name).register(http)).status_code == 201
        refused = await TestAccount.new("dave").register(http)
        assert refused.status_code == 429
        assert refused.json()["error"] == "rate_limited"
        assert int(refused.headers["Retry-After"]) > 60
        # Other endpoints of the same address are not affected.
        assert (await http.get("/v1/config")).status_code == 200


@pytest.mark.postgres
async def test_attachment_quota_holds_for_concurrent_uploads_on_postgresql(
    tmp_path: Path, postgres_url: str
) -> None:
    import asyncio

    settings = make_settings(
        tmp_path, database_url=postgres_url, limits={"max_attachment_bytes_per_device": 5000}
    )
    async with (
        running_relay(settings, app=delivery_app(settings)) as relay,
        relay.client(limits=httpx.Limits(max_connections=20)) as http,
    ):
        alice = await TestAccount.new("alice").register_and_login(http)
        answers = await asyncio.gather(
            *(_upload(http, alice, _chunked(os.urandom(1000))) for _ in range(12))
        )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201] * 5 + [507] * 7
    assert len(_blob_files(tmp_path)) == 5
