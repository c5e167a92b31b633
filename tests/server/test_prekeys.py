"""Prekey upload, counts, atomic bundle claims, low-stock signal and rate limit."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from server.db.models import Device
from tests.server.relay_harness import (
    Relay,
    TestAccount,
    auth_header,
    b64,
    make_settings,
    running_relay,
    table_snapshot,
)


class RecordingNotifier:
    """A DeviceNotifier that remembers what it was asked to push."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, dict[str, object]]] = []
        self.disconnects: list[tuple[int, str]] = []

    async def notify(self, device_pk: int, frame: dict[str, object]) -> None:
        self.frames.append((device_pk, frame))

    async def disconnect(self, device_pk: int, reason: str) -> None:
        self.disconnects.append((device_pk, reason))

    async def disconnect_token(self, device_pk: int, token_id: int, reason: str) -> None:
        self.disconnects.append((device_pk, reason))


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    settings = make_settings(
        tmp_path, limits={"prekey_batch_max": 20, "prekey_max_stock": 40, "prekey_low_threshold": 3}
    )
    async with running_relay(settings) as r:
        yield r


def _error(resp: httpx.Response, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.json()["error"] == code, resp.json()


async def test_bundle_hands_out_each_one_time_key_once_then_none(
    relay: Relay, http: httpx.AsyncClient
) -> None:
    bob = TestAccount.new("bob")
    body = bob.register_body(one_time=2, one_time_pq=1)
    assert (await http.post("/v1/accounts", json=body)).status_code == 201
    alice = TestAccount.new("alice")
    token = await alice.register_and_login(http)
    got = []
    for _ in range(3):
        resp = await http.get("/v1/prekeys/bob", headers=auth_header(token))
        assert resp.status_code == 200, resp.text
        (entry,) = resp.json()["devices"]
        got.append(entry)
    sent = body["prekeys"]
    assert got[0]["one_time_prekey"] == {**sent["one_time_prekeys"][0], "signature": ""}
    assert got[1]["one_time_prekey"] == {**sent["one_time_prekeys"][1], "signature": ""}
    assert got[2]["one_time_prekey"] is None
    assert got[0]["one_time_pq_prekey"] == sent["one_time_pq_prekeys"][0]
    assert got[1]["one_time_pq_prekey"] is None
    for entry in got:
        assert entry["signed_prekey"] == sent["signed_prekey"]
        assert entry["last_resort_prekey"] == sent["last_resort_prekey"]
        assert base64.b64decode(entry["identity_key"]) == bob.devices[0].identity_key
    resp = await http.get("/v1/prekeys/bob", headers=auth_header(token))
    assert base64.b64decode(resp.json()["device_list"]) == bob.device_list(1)
    assert base64.b64decode(resp.json()["account_key"]) == bob.account_key


async def test_upload_and_count(relay: Relay, http: httpx.AsyncClient) -> None:
    bob = TestAccount.new("bob")
    token = await bob.register_and_login(http, one_time=4, one_time_pq=2)
    count = await http.get("/v1/prekeys/count", headers=auth_header(token))
    assert count.json() == {
        "one_time_prekeys": 4,
        "one_time_pq_prekeys": 2,
        "low_threshold": 3,
        "max_stock": 40,
    }
    dev = bob.devices[0]
    up = {
        "one_time_prekeys": bob.one_time(dev, 10),
        "one_time_pq_prekeys": bob.one_time_pq(dev, 3),
        "signed_prekey": bob.signed_prekey(2),
    }
    assert (await http.post("/v1/prekeys", json=up, headers=auth_header(token))).status_code == 204
    count = await http.get("/v1/prekeys/count", headers=auth_header(token))
    assert (count.json()["one_time_prekeys"], count.json()["one_time_pq_prekeys"]) == (14, 5)


async def test_the_count_reads_both_kinds_in_one_statement(
    relay: Relay, http: httpx.AsyncClient
) -> None:
    # Two separate counts could straddle an upload committed in between and answer a pair
    # that never existed; one grouped SELECT sees one snapshot.
    from sqlalchemy import event

    from server.state import relay_state

    bob = TestAccount.new("bob")
    token = await bob.register_and_login(http, one_time=4, one_time_pq=2)
    seen: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "one_time_prekeys" in statement:
            seen.append(statement)

    engine = relay_state(relay.app).engine.sync_engine
    event.listen(engine, "before_cursor_execute", before)
    try:
        count = await http.get("/v1/prekeys/count", headers=auth_header(token))
    finally:
        event.remove(engine, "before_cursor_execute", before)
    assert (count.json()["one_time_prekeys"], count.json()["one_time_pq_prekeys"]) == (4, 2)
    assert len(seen) == 1, seen


def _bad_uploads(bob: TestAccount) -> list[tuple[dict[str, Any], int, str]]:
    dev = bob.devices[0]
    otk = bob.one_time(dev, 1)[0]
    pq = bob.one_time_pq(dev, 1)[0]
    return [
        ({"one_time_prekeys": bob.one_time(dev, 21)}, 413, "prekey_batch_too_large"),
        ({"one_time_pq_prekeys": bob.one_time_pq(dev, 21)}, 413, "prekey_batch_too_large"),
        (
            {"one_time_prekeys": [{**otk, "public_key": b64(b"\x03" + bytes(32))}]},
            400,
            "invalid_key",
        ),
        ({"one_time_prekeys": [{**otk, "public_key": b64(bytes(32))}]}, 400, "invalid_key"),
        ({"one_time_pq_prekeys": [{**pq, "signature": b64(bytes(63))}]}, 400, "invalid_signature"),
        ({"one_time_prekeys": [otk, otk]}, 400, "duplicate_key_id"),
        ({"one_time_prekeys": [{"key_id": 1, "public_key": "%%%"}]}, 422, "invalid_request"),
        (
            {"one_time_prekeys": [{"key_id": -1, "public_key": otk["public_key"]}]},
            422,
            "invalid_request",
        ),
        ({"one_time_prekeys": [{**otk, "key_id": "7"}], "x": 1}, 422, "invalid_request"),
        ({"signed_prekey": {"key_id": 1, "public_key": otk["public_key"]}}, 422, "invalid_request"),
        ({"last_resort_prekey": bob.signed_prekey(3)}, 400, "invalid_key"),
        # already stored key id (registration used ids 1..10)
        ({"one_time_prekeys": [{**otk, "key_id": 1}]}, 409, "duplicate_key_id"),
        ({"one_time_prekeys": bob.one_time(dev, 20)}, 201, "first of two: fills the stock"),
        ({"one_time_prekeys": bob.one_time(dev, 20)}, 409, "prekey_stock_full"),
    ]


async def test_bad_uploads_are_refused_and_store_nothing(
    relay: Relay, http: httpx.AsyncClient
) -> None:
    bob = TestAccount.new("bob")
    token = await bob.register_and_login(http)
    for body, status, code in _bad_uploads(bob):
        if status == 201:  # a good upload in the sequence
            resp = await http.post("/v1/prekeys", json=body, headers=auth_header(token))
            assert resp.status_code == 204, resp.text
            continue
        before = await table_snapshot(relay.app)
        resp = await http.post("/v1/prekeys", json=body, headers=auth_header(token))
        _error(resp, status, code)
        assert await table_snapshot(relay.app) == before, code


async def test_uploads_need_a_token(http: httpx.AsyncClient) -> None:
    _error(await http.post("/v1/prekeys", json={}), 401, "missing_token")
    _error(await http.get("/v1/prekeys/bob"), 401, "missing_token")


async def test_unknown_user_or_device_bundle_is_404(http: httpx.AsyncClient) -> None:
    alice = TestAccount.new("alice")
    token = await alice.register_and_login(http)
    _error(await http.get("/v1/prekeys/nobody", headers=auth_header(token)), 404, "unknown_user")
    _error(
        await http.get("/v1/prekeys/alice?device_id=9", headers=auth_header(token)),
        404,
        "unknown_device",
    )


async def test_low_stock_is_signalled_to_the_owning_device(
    relay: Relay, http: httpx.AsyncClient
) -> None:
    notifier = RecordingNotifier()
    relay.state.notifier = notifier
    bob = TestAccount.new("bob")
    assert (await bob.register(http, one_time=5, one_time_pq=5)).status_code == 201
    alice = TestAccount.new("alice")
    token = await alice.register_and_login(http)
    for _ in range(2):  # 5 -> 3 left: not below the threshold of 3 yet
        await http.get("/v1/prekeys/bob", headers=auth_header(token))
    assert notifier.frames == []
    await http.get("/v1/prekeys/bob", headers=auth_header(token))  # 2 left
    (device_pk, frame), *_ = notifier.frames
    assert frame == {"type": "prekeys_low", "one_time_prekeys": 2, "one_time_pq_prekeys": 2}
    async with relay.state.sessions() as session:
        bob_pk = (
            await session.execute(
                select(Device.pk).where(Device.auth_key == bob.devices[0].auth_key)
            )
        ).scalar_one()
    assert device_pk == bob_pk


async def test_bundle_fetches_are_rate_limited_per_requester(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, limits={"bundle_fetches_per_minute_per_device": 3})
    async with running_relay(settings) as relay, relay.client() as http:
        bob = TestAccount.new("bob")
        assert (await bob.register(http)).status_code == 201
        alice = TestAccount.new("alice")
        token = await alice.register_and_login(http)
        carol = TestAccount.new("carol")
        carol_token = await carol.register_and_login(http)
        for _ in range(3):
            assert (
                await http.get("/v1/prekeys/bob", headers=auth_header(token))
            ).status_code == 200
        before = await table_snapshot(relay.app)
        resp = await http.get("/v1/prekeys/bob", headers=auth_header(token))
        _error(resp, 429, "rate_limited")
        assert 1 <= int(resp.headers["retry-after"]) <= 20
        assert await table_snapshot(relay.app) == before  # nothing claimed
        # Another requester is not affected.
        ok = await http.get("/v1/prekeys/bob", headers=auth_header(carol_token))
        assert ok.status_code == 200


async def _concurrent_claims(settings_dir: Path, database_url: str | None) -> None:
    keys = 30
    fetchers = 40
    settings = make_settings(
        settings_dir,
        database_url=database_url,
        limits={
            "bundle_fetches_per_minute_per_device": 1000,
            # This test is about atomic claims, not the claim budget (tests/abuse).
            "prekey_claims_per_hour_per_target": 1000,
            "prekey_claims_per_hour_per_requester": 1000,
        },
    )
    async with running_relay(settings) as relay:
        async with relay.client() as http:
            bob = TestAccount.new("bob", device_ids=(1,))
            assert (await bob.register(http, one_time=keys, one_time_pq=keys)).status_code == 201
            tokens = []
            for i in range(4):
                requester = TestAccount.new(f"fetcher{i}")
                tokens.append(await requester.register_and_login(http))
        limits = httpx.Limits(max_connections=fetchers)
        async with relay.client(limits=limits) as http:

            async def fetch(i: int) -> dict[str, Any]:
                resp = await http.get("/v1/prekeys/bob", headers=auth_header(tokens[i % 4]))
                assert resp.status_code == 200, resp.text
                entry: dict[str, Any] = resp.json()["devices"][0]
                return entry

            entries = await asyncio.gather(*(fetch(i) for i in range(fetchers)))
    x = [e["one_time_prekey"]["key_id"] for e in entries if e["one_time_prekey"]]
    pq = [e["one_time_pq_prekey"]["key_id"] for e in entries if e["one_time_pq_prekey"]]
    assert len(x) == len(set(x)) == keys  # every key handed out exactly once
    assert len(pq) == len(set(pq)) == keys
    assert sum(1 for e in entries if e["one_time_prekey"] is None) == fetchers - keys


async def test_concurrent_fetchers_never_get_the_same_key_on_sqlite(tmp_path: Path) -> None:
    await _concurrent_claims(tmp_path, None)


@pytest.mark.postgres
async def test_concurrent_fetchers_never_get_the_same_key_on_postgresql(
    tmp_path: Path, postgres_url: str
) -> None:
    await _concurrent_claims(tmp_path, postgres_url)


async def test_a_connected_device_receives_prekeys_low_over_its_websocket(tmp_path: Path) -> None:
    from tests.server.ws_kit import Peer, delivery_app, open_ws

    settings = make_settings(tmp_path, limits={"prekey_low_threshold": 3})
    app = delivery_app(settings)
    async with running_relay(settings, app=app) as relay, relay.client() as http:
        bob = TestAccount.new("bob")
        bob_token = await bob.register_and_login(http, one_time=4, one_time_pq=8)
        alice = TestAccount.new("alice")
        token = await alice.register_and_login(http)
        async with open_ws(relay, Peer("bob", 1, bob_token)) as ws:
            assert (
                await http.get("/v1/prekeys/bob", headers=auth_header(token))
            ).status_code == 200
            await ws.nothing(0.3)  # 3 left: not below the threshold
            assert (
                await http.get("/v1/prekeys/bob", headers=auth_header(token))
            ).status_code == 200
            frame = await ws.expect("prekeys_low")
            assert frame == {"type": "prekeys_low", "one_time_prekeys": 2, "one_time_pq_prekeys": 6}


@pytest.mark.postgres
async def test_refused_prekey_uploads_leave_postgresql_unchanged(
    tmp_path: Path, postgres_url: str
) -> None:
    settings = make_settings(
        tmp_path,
        database_url=postgres_url,
        limits={"prekey_batch_max": 20, "prekey_max_stock": 40, "prekey_low_threshold": 3},
    )
    async with running_relay(settings) as relay, relay.client() as http:
        bob = TestAccount.new("bob")
        token = await bob.register_and_login(http)
        for body, status, code in _bad_uploads(bob):
            if status == 201:
                resp = await http.post("/v1/prekeys", json=body, headers=auth_header(token))
                assert resp.status_code == 204, resp.text
                continue
            before = await table_snapshot(relay.app)
            resp = await http.post("/v1/prekeys", json=body, headers=auth_header(token))
            _error(resp, status, code)
            assert await table_snapshot(relay.app) == before, code
