"""Registration and signed device lists, through a real relay on loopback."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.server.relay_harness import (
    Relay,
    TestAccount,
    TestDevice,
    auth_header,
    b64,
    make_settings,
    running_relay,
    table_snapshot,
)


def _error(resp: httpx.Response, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["error"] == code, body
    assert isinstance(body["message"], str) and body["message"]


async def test_registration_stores_the_account_and_serves_its_signed_list(
    http: httpx.AsyncClient,
) -> None:
    alice = TestAccount.new("alice")
    resp = await alice.register(http)
    assert resp.status_code == 201, resp.text
    assert resp.json() == {"username": "alice", "device_id": 1, "device_list_version": 1}
    token = await alice.login(http)
    devices = (await http.get("/v1/accounts/alice/devices", headers=auth_header(token))).json()
    assert base64.b64decode(devices["account_key"]) == alice.account_key
    assert base64.b64decode(devices["device_list"]) == alice.device_list(1, alice.devices[:1])
    assert devices["devices"] == [
        {
            "device_id": 1,
            "identity_key": b64(alice.devices[0].identity_key),
            "auth_key": b64(alice.devices[0].auth_key),
        }
    ]


def _tamper(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = dict(body)
    if "." in path:
        head, tail = path.split(".", 1)
        out[head] = _tamper(dict(out[head]), tail, value)
    else:
        out[path] = value
    return out


BAD_REGISTRATIONS = [
    ("username", "Alice!", 422, "invalid_request"),
    ("username", 12345, 422, "invalid_request"),
    ("account_key", "not base64!!", 422, "invalid_request"),
    ("account_key", b64(b"\x01" + bytes(32)), 400, "invalid_key"),
    ("device_list", "AAAA", 400, "invalid_device_list"),
    ("device_list", 7, 422, "invalid_request"),
    ("prekeys.signed_prekey", None, 400, "missing_prekeys"),
    ("prekeys.one_time_prekeys", "nope", 422, "invalid_request"),
    ("unexpected", 1, 422, "invalid_request"),
]


@pytest.mark.parametrize(("path", "value", "status", "code"), BAD_REGISTRATIONS)
async def test_bad_registration_is_refused_and_stores_nothing(
    relay: Relay, http: httpx.AsyncClient, path: str, value: Any, status: int, code: str
) -> None:
    before = await table_snapshot(relay.app)
    body = _tamper(TestAccount.new("bob").register_body(), path, value)
    _error(await http.post("/v1/accounts", json=body), status, code)
    assert await table_snapshot(relay.app) == before


async def test_malformed_json_gets_a_400(relay: Relay, http: httpx.AsyncClient) -> None:
    resp = await http.post(
        "/v1/accounts", content=b'{"username": "bob",', headers={"content-type": "application/json"}
    )
    _error(resp, 400, "malformed_json")


async def test_device_list_signed_by_another_key_is_refused(
    relay: Relay, http: httpx.AsyncClient
) -> None:
    bob = TestAccount.new("bob")
    body = bob.register_body()
    body["device_list"] = b64(bob.device_list(1, signer=Ed25519PrivateKey.generate()))
    before = await table_snapshot(relay.app)
    _error(await http.post("/v1/accounts", json=body), 400, "invalid_device_list")
    assert await table_snapshot(relay.app) == before


async def test_device_list_for_another_username_is_refused(http: httpx.AsyncClient) -> None:
    bob = TestAccount.new("bob")
    body = bob.register_body()
    body["device_list"] = b64(bob.device_list(1, username="mallory"))
    _error(await http.post("/v1/accounts", json=body), 400, "invalid_device_list")


async def test_first_device_list_must_be_version_one_with_one_device(
    http: httpx.AsyncClient,
) -> None:
    bob = TestAccount.new("bob", device_ids=(1, 2))
    body = bob.register_body()
    body["device_list"] = b64(bob.device_list(1))
    _error(await http.post("/v1/accounts", json=body), 400, "invalid_device_list")
    body["device_list"] = b64(bob.device_list(2, bob.devices[:1]))
    _error(await http.post("/v1/accounts", json=body), 400, "invalid_device_list")


async def test_a_taken_username_is_a_conflict(relay: Relay, http: httpx.AsyncClient) -> None:
    assert (await TestAccount.new("carol").register(http)).status_code == 201
    before = await table_snapshot(relay.app)
    _error(await TestAccount.new("carol").register(http), 409, "username_taken")
    assert await table_snapshot(relay.app) == before


async def test_adding_and_removing_devices_follows_the_signed_list(
    relay: Relay, http: httpx.AsyncClient
) -> None:
    alice = TestAccount.new("alice")
    token1 = await alice.register_and_login(http)
    phone = TestDevice(2)
    resp = await alice.publish_devices(http, token1, [alice.devices[0], phone])
    assert resp.status_code == 200, resp.text
    assert [d["device_id"] for d in resp.json()["devices"]] == [1, 2]
    assert resp.json()["device_list_version"] == 2
    token2 = await alice.login(http, device_id=2)
    # The new device uploads its prekeys with its own token.
    up = await http.post("/v1/prekeys", json=alice.prekeys(phone), headers=auth_header(token2))
    assert up.status_code == 204, up.text
    # Device 1 is removed by device 2: its token dies, its rows are gone.
    resp = await alice.publish_devices(http, token2, [phone])
    assert resp.status_code == 200, resp.text
    _error(
        await http.get("/v1/accounts/alice/devices", headers=auth_header(token1)),
        401,
        "invalid_token",
    )
    listed = await http.get("/v1/accounts/alice/devices", headers=auth_header(token2))
    assert [d["device_id"] for d in listed.json()["devices"]] == [2]
    snap = await table_snapshot(relay.app, ["devices", "auth_tokens"])
    assert len(snap["devices"]) == 1 and len(snap["auth_tokens"]) == 1


async def test_old_or_equal_device_list_version_is_refused(
    relay: Relay, http: httpx.AsyncClient
) -> None:
    alice = TestAccount.new("alice")
    token = await alice.register_and_login(http)
    before = await table_snapshot(relay.app)
    for version in (1, 0):
        resp = await http.put(
            "/v1/accounts/alice/devices",
            json={"device_list": b64(alice.device_list(version) if version else b"\x01")},
            headers=auth_header(token),
        )
        assert resp.status_code in (409, 400), resp.text
    resp = await http.put(
        "/v1/accounts/alice/devices",
        json={"device_list": b64(alice.device_list(1, [alice.devices[0], TestDevice(5)]))},
        headers=auth_header(token),
    )
    _error(resp, 409, "stale_device_list")
    assert await table_snapshot(relay.app) == before


async def test_another_account_cannot_replace_my_device_list(
    relay: Relay, http: httpx.AsyncClient
) -> None:
    alice = TestAccount.new("alice")
    await alice.register_and_login(http)
    mallory = TestAccount.new("mallory")
    m_token = await mallory.register_and_login(http)
    before = await table_snapshot(relay.app)
    # Mallory signs a list for alice's account with her own key, and with alice's name.
    forged = mallory.device_list(2, mallory.devices, username="alice")
    resp = await http.put(
        "/v1/accounts/alice/devices",
        json={"device_list": b64(forged)},
        headers=auth_header(m_token),
    )
    _error(resp, 403, "not_your_account")
    assert await table_snapshot(relay.app) == before


async def test_a_list_signed_by_a_foreign_key_is_refused_even_for_my_account(
    relay: Relay, http: httpx.AsyncClient
) -> None:
    alice = TestAccount.new("alice")
    token = await alice.register_and_login(http)
    before = await table_snapshot(relay.app)
    forged = alice.device_list(
        2, [*alice.devices, TestDevice(9)], signer=Ed25519PrivateKey.generate()
    )
    resp = await http.put(
        "/v1/accounts/alice/devices", json={"device_list": b64(forged)}, headers=auth_header(token)
    )
    _error(resp, 400, "invalid_device_list")
    assert await table_snapshot(relay.app) == before


async def test_devices_of_an_unknown_user_are_404(http: httpx.AsyncClient) -> None:
    alice = TestAccount.new("alice")
    token = await alice.register_and_login(http)
    resp = await http.get("/v1/accounts/nobody/devices", headers=auth_header(token))
    _error(resp, 404, "unknown_user")


async def test_listing_devices_needs_a_token(http: httpx.AsyncClient) -> None:
    _error(await http.get("/v1/accounts/alice/devices"), 401, "missing_token")


async def test_closed_registration_refuses_everyone(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, registration="closed")
    async with running_relay(settings) as relay, relay.client() as http:
        _error(await TestAccount.new("dave").register(http), 403, "registration_closed")
        assert (await table_snapshot(relay.app))["accounts"] == []


async def test_invite_policy_consumes_invites(tmp_path: Path) -> None:
    from server.accounts.invites import add_invite
    from server.auth.service import hash_secret
    from server.clock import Clock

    settings = make_settings(tmp_path, registration="invite")
    async with running_relay(settings) as relay, relay.client() as http:
        async with relay.state.sessions() as session:
            await add_invite(
                session,
                token_hash=hash_secret(b"let-me-in"),
                uses=1,
                expires_at=None,
                now=Clock().now(),
            )
            await session.commit()
        _error(await TestAccount.new("erin").register(http), 403, "invite_required")
        _error(await TestAccount.new("erin").register(http, invite="wrong"), 403, "invalid_invite")
        assert (await TestAccount.new("erin").register(http, invite="let-me-in")).status_code == 201
        _error(
            await TestAccount.new("frank").register(http, invite="let-me-in"), 403, "invalid_invite"
        )


async def _race_for_a_username(tmp_path: Path, database_url: str | None) -> None:
    settings = make_settings(tmp_path, database_url=database_url)
    async with running_relay(settings) as relay, relay.client() as http:
        contenders = [TestAccount.new("popular") for _ in range(8)]
        responses = await asyncio.gather(*(c.register(http) for c in contenders))
        codes = sorted(r.status_code for r in responses)
        assert codes == [201] + [409] * 7, [r.text for r in responses]
        snap = await table_snapshot(relay.app, ["accounts", "devices"])
        assert len(snap["accounts"]) == 1 and len(snap["devices"]) == 1


async def test_concurrent_registrations_of_one_username_create_one_account_on_sqlite(
    tmp_path: Path,
) -> None:
    await _race_for_a_username(tmp_path, None)


@pytest.mark.postgres
async def test_concurrent_registrations_of_one_username_create_one_account_on_postgresql(
    tmp_path: Path, postgres_url: str
) -> None:
    await _race_for_a_username(tmp_path, postgres_url)


@pytest.mark.postgres
async def test_refused_device_list_changes_leave_postgresql_unchanged(
    tmp_path: Path, postgres_url: str
) -> None:
    settings = make_settings(tmp_path, database_url=postgres_url)
    async with running_relay(settings) as relay, relay.client() as http:
        alice = TestAccount.new("alice")
        token = await alice.register_and_login(http)
        mallory = TestAccount.new("mallory")
        m_token = await mallory.register_and_login(http)
        before = await table_snapshot(relay.app)
        attempts = [
            (token, alice.device_list(1, [alice.devices[0], TestDevice(5)]), 409),
            (token, alice.device_list(2, signer=Ed25519PrivateKey.generate()), 400),
            (m_token, mallory.device_list(2, username="alice"), 403),
            (token, b"\x01\x00", 400),
        ]
        for who, blob, status in attempts:
            resp = await http.put(
                "/v1/accounts/alice/devices",
                json={"device_list": b64(blob)},
                headers=auth_header(who),
            )
            assert resp.status_code == status, resp.text
        _error(await TestAccount.new("alice").register(http), 409, "username_taken")
        assert await table_snapshot(relay.app) == before
