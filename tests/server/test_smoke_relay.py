"""The relay starts on loopback, registers an account and logs a device in."""

from __future__ import annotations

from pathlib import Path

from tests.server.relay_harness import TestAccount, auth_header, make_settings, running_relay


async def test_register_login_and_fetch_devices_on_sqlite(tmp_path: Path) -> None:
    async with running_relay(make_settings(tmp_path)) as relay, relay.client() as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        alice = TestAccount.new("alice")
        token = await alice.register_and_login(http)
        resp = await http.get("/v1/accounts/alice/devices", headers=auth_header(token))
        assert resp.status_code == 200, resp.text
        assert [d["device_id"] for d in resp.json()["devices"]] == [1]
