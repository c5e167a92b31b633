"""Finding 7: nobody can evict a device's pending login challenge; challenge requests are
bounded per requesting address and per device."""

from __future__ import annotations

import base64
from pathlib import Path

from tests.abuse.conn_support import http_from
from tests.server.relay_harness import TestAccount, b64, make_settings, running_relay


async def _challenge(http: object, account: TestAccount) -> bytes:
    resp = await http.post(  # type: ignore[attr-defined]
        "/v1/auth/challenge", json={"username": account.username, "device_id": 1}
    )
    assert resp.status_code == 200, resp.text
    return base64.b64decode(resp.json()["nonce"])


async def _answer(http: object, account: TestAccount, nonce: bytes) -> int:
    device = account.devices[0]
    resp = await http.post(  # type: ignore[attr-defined]
        "/v1/auth/token",
        json={
            "username": account.username,
            "device_id": 1,
            "nonce": b64(nonce),
            "signature": b64(device.sign_challenge(account.username, nonce)),
        },
    )
    return int(resp.status_code)


async def test_a_stranger_cannot_evict_the_owners_pending_challenge(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, limits={"max_challenges_per_device": 8})
    async with running_relay(settings) as relay:
        alice = TestAccount.new("alice")
        async with http_from(relay, "127.0.0.1") as owner, http_from(relay, "127.0.0.2") as evil:
            assert (await alice.register(owner)).status_code == 201
            nonce = await _challenge(owner, alice)
            for _ in range(40):  # far more than the device keeps
                resp = await evil.post(
                    "/v1/auth/challenge", json={"username": "alice", "device_id": 1}
                )
                assert resp.status_code in (200, 429)
            assert await _answer(owner, alice, nonce) == 200


async def test_many_stranger_addresses_still_cannot_evict_the_owner(tmp_path: Path) -> None:
    limits = {"max_challenges_per_device": 8, "max_challenges_per_address_per_device": 2}
    settings = make_settings(tmp_path, limits=limits)
    async with running_relay(settings) as relay:
        alice = TestAccount.new("alice")
        async with http_from(relay, "127.0.0.1") as owner:
            assert (await alice.register(owner)).status_code == 201
            nonce = await _challenge(owner, alice)
            for i in range(10, 20):  # ten addresses, five challenges each
                async with http_from(relay, f"127.0.0.{i}") as evil:
                    for _ in range(5):
                        await _challenge(evil, alice)
            assert await _answer(owner, alice, nonce) == 200


async def test_challenge_requests_are_rate_limited_per_address(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, limits={"challenges_per_minute_per_address": 5})
    async with running_relay(settings) as relay:
        alice = TestAccount.new("alice")
        async with http_from(relay, "127.0.0.1") as owner, http_from(relay, "127.0.0.2") as evil:
            assert (await alice.register(owner)).status_code == 201
            statuses = []
            for _ in range(8):
                resp = await evil.post(
                    "/v1/auth/challenge", json={"username": "alice", "device_id": 1}
                )
                statuses.append(resp.status_code)
            assert statuses[:5] == [200] * 5
            assert statuses[5:] == [429] * 3
            assert resp.json()["error"] == "rate_limited"
            # The owner's address has its own budget.
            assert await _answer(owner, alice, await _challenge(owner, alice)) == 200
