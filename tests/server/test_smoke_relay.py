"""The whole REST flow on both databases: register, log in, publish devices, prekeys, logout."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from tests.server.relay_harness import (
    TestAccount,
    TestDevice,
    auth_header,
    make_settings,
    running_relay,
)


async def _rest_flow(tmp_path: Path, database_url: str | None) -> None:
    settings = make_settings(tmp_path, database_url=database_url)
    async with running_relay(settings) as relay, relay.client() as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        alice = TestAccount.new("alice")
        token = await alice.register_and_login(http)
        resp = await http.get("/v1/accounts/alice/devices", headers=auth_header(token))
        assert resp.status_code == 200, resp.text
        assert [d["device_id"] for d in resp.json()["devices"]] == [1]
        laptop = TestDevice(7)
        resp = await alice.publish_devices(http, token, [alice.devices[0], laptop])
        assert resp.status_code == 200, resp.text
        laptop_token = await alice.login(http, 7)
        up = await http.post(
            "/v1/prekeys", json=alice.prekeys(laptop, 3, 3), headers=auth_header(laptop_token)
        )
        assert up.status_code == 204, up.text
        bob = TestAccount.new("bob")
        bob_token = await bob.register_and_login(http)
        bundle = (await http.get("/v1/prekeys/alice", headers=auth_header(bob_token))).json()
        assert [d["device_id"] for d in bundle["devices"]] == [1, 7]
        assert all(d["one_time_prekey"] and d["one_time_pq_prekey"] for d in bundle["devices"])
        one = await http.get("/v1/prekeys/alice?device_id=7", headers=auth_header(bob_token))
        assert [d["device_id"] for d in one.json()["devices"]] == [7]
        count = await http.get("/v1/prekeys/count", headers=auth_header(laptop_token))
        assert count.json()["one_time_prekeys"] == 1
        assert (await http.delete("/v1/auth/token", headers=auth_header(token))).status_code == 204
        gone = await http.get("/v1/prekeys/count", headers=auth_header(token))
        assert gone.status_code == 401


async def test_rest_flow_on_sqlite(tmp_path: Path) -> None:
    await _rest_flow(tmp_path, None)


@pytest.mark.postgres
async def test_rest_flow_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    await _rest_flow(tmp_path, postgres_url)


@pytest.mark.postgres
async def test_readiness_fails_when_postgresql_goes_away(tmp_path: Path, postgres_url: str) -> None:
    settings = make_settings(tmp_path, database_url=postgres_url)
    async with running_relay(settings) as relay, relay.client() as http:
        assert (await http.get("/readyz")).status_code == 200
        head, _, name = postgres_url.rpartition("/")
        admin = head.replace("postgresql+asyncpg://", "postgresql://", 1) + "/postgres"
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        finally:
            await conn.close()
        resp = await http.get("/readyz")
        assert resp.status_code == 503
        assert resp.json()["checks"]["database"].startswith("error:")
        assert (await http.get("/healthz")).status_code == 200
