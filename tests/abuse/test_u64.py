"""Finding 9 (u64): every value of a protocol ``u64`` is stored and answered exactly.

Measured before: a device-list version ≥ 2^63 gave a 500 (``OverflowError``: stored as a
signed 64-bit integer), and version 2^63 − 1 was accepted after which no higher version could
ever be stored — the account's device list was frozen for good. Now versions are u64 end to
end (stored shifted by −2^63, order-preserving) on SQLite and PostgreSQL, 2^64 − 1 included;
the integers the protocol calls u32 refuse 2^32 and 2^64 with a 4xx, never a 500.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import httpx
import pytest

from server.db.engine import create_engine
from server.db.migrate import upgrade
from tests.server.relay_harness import (
    TestAccount,
    auth_header,
    b64,
    make_settings,
    running_relay,
)
from tests.server.ws_kit import Peer, delivery_app, open_ws

U64_MAX = 2**64 - 1


async def _publish(http: httpx.AsyncClient, alice: TestAccount, token: str, version: int) -> int:
    resp = await http.put(
        "/v1/accounts/alice/devices",
        json={"device_list": b64(alice.device_list(version))},
        headers=auth_header(token),
    )
    return resp.status_code


async def _versions_are_u64(tmp_path: Path, database_url: str | None) -> None:
    settings = make_settings(tmp_path, database_url=database_url)
    async with running_relay(settings) as relay, relay.client() as http:
        alice = TestAccount.new("alice")
        token = await alice.register_and_login(http)
        for version in (2**63 - 1, 2**63, 2**63 + 1, U64_MAX - 1, U64_MAX):
            assert await _publish(http, alice, token, version) == 200, version
            got = await http.get("/v1/accounts/alice/devices", headers=auth_header(token))
            assert got.json()["device_list_version"] == version
        # Not newer: a conflict, never a 500 (and nothing above 2^64 - 1 can be signed).
        assert await _publish(http, alice, token, U64_MAX) == 409
        assert await _publish(http, alice, token, 2**63) == 409
        assert await _publish(http, alice, token, 5) == 409


async def test_device_list_versions_are_u64_on_sqlite(tmp_path: Path) -> None:
    await _versions_are_u64(tmp_path, None)


@pytest.mark.postgres
async def test_device_list_versions_are_u64_on_postgresql(
    tmp_path: Path, postgres_url: str
) -> None:
    await _versions_are_u64(tmp_path, postgres_url)


async def test_u32_fields_refuse_2_to_the_32_and_2_to_the_64_with_a_4xx(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with (
        running_relay(settings, app=delivery_app(settings)) as relay,
        relay.client() as http,
    ):
        alice = TestAccount.new("alice")
        token = await alice.register_and_login(http)
        await TestAccount.new("bob").register_and_login(http)
        for too_big in (2**32, 2**64):
            challenge = await http.post(
                "/v1/auth/challenge", json={"username": "alice", "device_id": too_big}
            )
            assert challenge.status_code == 422, challenge.text
            key = alice.one_time(alice.devices[0], 1)[0] | {"key_id": too_big}
            upload = await http.post(
                "/v1/prekeys", json={"one_time_prekeys": [key]}, headers=auth_header(token)
            )
            assert upload.status_code == 422, upload.text
            bundle = await http.get(
                f"/v1/prekeys/bob?device_id={too_big}", headers=auth_header(token)
            )
            assert bundle.status_code == 422, bundle.text
        async with open_ws(relay, Peer("alice", 1, token)) as ws:
            for too_big in (2**32, 2**64):
                await ws.send(
                    {
                        "type": "send",
                        "id": f"m{too_big}",
                        "payloads": [{"data": "AA==", "to": [{"user": "bob", "device": too_big}]}],
                    }
                )
                assert (await ws.expect("error"))["code"] == "bad_frame"
            await ws.send({"type": "ack", "seqs": [2**64]})
            frame = await ws.recv()
            assert frame["type"] == "error" and frame["code"] in ("ack_unknown", "bad_frame")


async def test_stored_versions_keep_their_value_and_order_through_the_migration(
    tmp_path: Path,
) -> None:
    path = tmp_path / "relay.sqlite3"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        await upgrade(engine, "0003")
    finally:
        await engine.dispose()

    def seed() -> None:
        with sqlite3.connect(path) as db:
            db.executemany(
                "INSERT INTO accounts (id, username, account_key, device_list,"
                " device_list_version, created_at) VALUES (?, ?, x'00', x'00', ?, 0)",
                [(1, "alice", 1), (2, "bob", 2**63 - 1), (3, "carol", 7)],
            )

    await asyncio.to_thread(seed)
    settings = make_settings(tmp_path, database_url=f"sqlite+aiosqlite:///{path}")
    async with running_relay(settings) as relay:
        from sqlalchemy import select

        from server.db.models import Account

        async with relay.state.sessions() as session:
            rows = await session.execute(
                select(Account.username, Account.device_list_version).order_by(
                    Account.device_list_version
                )
            )
            assert rows.all() == [("alice", 1), ("carol", 7), ("bob", 2**63 - 1)]
            bigger = await session.execute(
                select(Account.username).where(Account.device_list_version > 2**62)
            )
            assert bigger.scalars().all() == ["bob"]
