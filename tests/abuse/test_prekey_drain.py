"""Finding 6 (prekey drain): one-time prekeys leave a device at a bounded rate.

Measured before: four fresh accounts from one address took all 500 of a victim's one-time
prekeys in 4.9 s (a single requester: 122 in 1.2 s), although ``docs/threat-model.md``
promised the opposite. Now a device's one-time keys are handed out at most
``prekey_claims_per_hour_per_target`` times an hour (all requesters) and
``prekey_claims_per_hour_per_requester`` times to one requesting device; past that a bundle
still comes, with the signed prekey and the last-resort ML-KEM key only, and the owning
device is told (``prekeys_drain``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.relay_harness import TestAccount, auth_header, make_settings, running_relay
from tests.server.ws_kit import Peer, delivery_app, open_ws

PER_TARGET = 10
PER_REQUESTER = 3
STOCK = 30
LIMITS = {
    "prekey_claims_per_hour_per_target": PER_TARGET,
    "prekey_claims_per_hour_per_requester": PER_REQUESTER,
    "bundle_fetches_per_minute_per_device": 10_000,
}


async def _bundle(http: httpx.AsyncClient, token: str) -> dict[str, Any]:
    resp = await http.get("/v1/prekeys/victim", headers=auth_header(token))
    assert resp.status_code == 200, resp.text
    entry: dict[str, Any] = resp.json()["devices"][0]
    return entry


async def _drain(tmp_path: Path, database_url: str | None) -> None:
    settings = make_settings(tmp_path, database_url=database_url, limits=LIMITS)
    async with (
        running_relay(settings, app=delivery_app(settings)) as relay,
        relay.client(limits=httpx.Limits(max_connections=16)) as http,
    ):
        victim = TestAccount.new("victim")
        victim_token = await victim.register_and_login(http)
        upload = {
            "one_time_prekeys": victim.one_time(victim.devices[0], STOCK - 5),
            "one_time_pq_prekeys": victim.one_time_pq(victim.devices[0], STOCK - 5),
        }
        resp = await http.post("/v1/prekeys", json=upload, headers=auth_header(victim_token))
        assert resp.status_code == 204, resp.text
        attackers = [
            await TestAccount.new(f"attacker{i}").register_and_login(http) for i in range(6)
        ]
        async with open_ws(relay, Peer("victim", 1, victim_token)) as victim_ws:
            # Six accounts from one address fetch concurrently, ten times each.
            entries = await asyncio.gather(
                *(_bundle(http, token) for token in attackers for _ in range(10))
            )
            notice = await victim_ws.expect("prekeys_drain", wait=10)
            assert notice == {
                "type": "prekeys_drain",
                "claims": PER_TARGET,
                "window_seconds": 3600,
            }
        given = [e for e in entries if e["one_time_prekey"] is not None]
        assert len(given) == PER_TARGET
        assert len({e["one_time_prekey"]["key_id"] for e in given}) == PER_TARGET
        for entry in entries:
            # Every bundle still lets the requester start a session (PQXDH without OPK).
            assert entry["signed_prekey"] is not None
            assert entry["last_resort_prekey"] is not None
            if entry["one_time_prekey"] is None:
                assert entry["one_time_pq_prekey"] is None
        counts = await http.get("/v1/prekeys/count", headers=auth_header(victim_token))
        assert counts.json()["one_time_prekeys"] == STOCK - PER_TARGET
        assert counts.json()["one_time_pq_prekeys"] == STOCK - PER_TARGET
        metrics = (await http.get("/metrics")).text
        assert f"vox_prekeys_withheld_total {60 - PER_TARGET}.0" in metrics
        assert "vox_prekeys_drained_total 1.0" in metrics


async def test_strangers_cannot_drain_a_devices_one_time_prekeys_on_sqlite(
    tmp_path: Path,
) -> None:
    await _drain(tmp_path, None)


@pytest.mark.postgres
async def test_strangers_cannot_drain_a_devices_one_time_prekeys_on_postgresql(
    tmp_path: Path, postgres_url: str
) -> None:
    await _drain(tmp_path, postgres_url)


async def test_one_requester_gets_only_its_own_budget_of_one_time_keys(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, limits=LIMITS)
    async with running_relay(settings) as relay, relay.client() as http:
        await TestAccount.new("victim").register_and_login(http)
        greedy = await TestAccount.new("greedy").register_and_login(http)
        fair = await TestAccount.new("fair").register_and_login(http)
        from_greedy = [await _bundle(http, greedy) for _ in range(8)]
        assert [e["one_time_prekey"] is not None for e in from_greedy] == [True] * 3 + [False] * 5
        # Someone else still gets a one-time key: the greedy requester used only its share.
        assert (await _bundle(http, fair))["one_time_prekey"] is not None
