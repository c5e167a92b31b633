"""The relay refuses small-order and non-canonical X25519/Ed25519 public keys wherever a
client hands it one (``wire.weak_keys``): registration (account key, the device list's
identity and auth keys, signed and one-time prekeys), a device-list update (device add) and a
prekey upload — each with a 400 that names the key, and nothing stored."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

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
from wire.weak_keys import ED25519_SMALL_ORDER_Y, X25519_LOW_ORDER_U

P = 2**255 - 19
#: Every small-order Ed25519 encoding (both sign bits) and one non-canonical y.
WEAK_ED25519 = [
    (y | sign << 255).to_bytes(32, "little")
    for y in sorted(ED25519_SMALL_ORDER_Y)
    for sign in (0, 1)
] + [(P + 3).to_bytes(32, "little")]
#: Every canonical low-order X25519 u (the non-canonical ones fail the canonical check).
WEAK_X25519 = [u.to_bytes(32, "little") for u in sorted(X25519_LOW_ORDER_U) if u < P]


@dataclass
class WeakDevice(TestDevice):
    """A device whose identity or auth key is replaced by the given raw 32 bytes."""

    raw_identity: bytes | None = None
    raw_auth: bytes | None = None

    @property
    def identity_key(self) -> bytes:
        return b"\x01" + self.raw_identity if self.raw_identity else super().identity_key

    @property
    def auth_key(self) -> bytes:
        return b"\x02" + self.raw_auth if self.raw_auth else super().auth_key


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    limits = {"registrations_per_hour_per_ip": 1000, "requests_per_minute_per_ip": 10_000}
    async with running_relay(make_settings(tmp_path, limits=limits)) as r:
        yield r


def _refused(resp: httpx.Response, code: str, *words: str) -> None:
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["error"] == code, body
    assert any(word in body["message"] for word in words), body["message"]


WORDS = ("small-order", "low-order", "non-canonical")


async def test_registration_refuses_a_weak_account_key(
    relay: Relay, http: httpx.AsyncClient
) -> None:
    before = await table_snapshot(relay.app)
    for n, raw in enumerate(WEAK_ED25519):
        body = TestAccount.new(f"weak{n}").register_body()
        body["account_key"] = b64(b"\x02" + raw)
        _refused(await http.post("/v1/accounts", json=body), "invalid_key", *WORDS)
    assert await table_snapshot(relay.app) == before


async def test_registration_refuses_weak_identity_and_auth_keys(
    relay: Relay, http: httpx.AsyncClient
) -> None:
    before = await table_snapshot(relay.app)
    cases: list[dict[str, Any]] = [{"raw_identity": raw} for raw in WEAK_X25519]
    cases += [{"raw_auth": raw} for raw in WEAK_ED25519]
    for n, case in enumerate(cases):
        account = TestAccount(f"weak{n}", devices=[WeakDevice(1, **case)])
        resp = await http.post("/v1/accounts", json=account.register_body())
        _refused(resp, "invalid_device_list", *WORDS)
        assert ("identity key" if "raw_identity" in case else "auth key") in resp.json()["message"]
    assert await table_snapshot(relay.app) == before


async def test_registration_refuses_weak_prekeys(relay: Relay, http: httpx.AsyncClient) -> None:
    before = await table_snapshot(relay.app)
    for n, raw in enumerate(WEAK_X25519):
        account = TestAccount.new(f"weak{n}")
        body = account.register_body()
        key = b"\x01" + raw
        body["prekeys"]["signed_prekey"]["public_key"] = b64(key)
        body["prekeys"]["signed_prekey"]["signature"] = b64(account.account.sign(key))
        _refused(await http.post("/v1/accounts", json=body), "invalid_key", "low-order")
        body = account.register_body()
        body["prekeys"]["one_time_prekeys"][2]["public_key"] = b64(key)
        _refused(await http.post("/v1/accounts", json=body), "invalid_key", "low-order")
    assert await table_snapshot(relay.app) == before


async def test_adding_a_device_with_weak_keys_is_refused(
    relay: Relay, http: httpx.AsyncClient
) -> None:
    alice = TestAccount.new("alice")
    token = await alice.register_and_login(http)
    before = await table_snapshot(relay.app)
    cases: list[dict[str, Any]] = [{"raw_identity": raw} for raw in WEAK_X25519]
    cases += [{"raw_auth": raw} for raw in WEAK_ED25519]
    for case in cases:
        listed = [alice.devices[0], WeakDevice(2, **case)]
        resp = await http.put(
            "/v1/accounts/alice/devices",
            json={"device_list": b64(alice.device_list(2, listed))},
            headers=auth_header(token),
        )
        _refused(resp, "invalid_device_list", *WORDS)
    assert await table_snapshot(relay.app) == before


async def test_a_prekey_upload_with_a_weak_key_is_refused(
    relay: Relay, http: httpx.AsyncClient
) -> None:
    alice = TestAccount.new("alice")
    token = await alice.register_and_login(http)
    device = alice.devices[0]
    before = await table_snapshot(relay.app)
    for raw in WEAK_X25519:
        key = b"\x01" + raw
        signed = {"key_id": 7, "public_key": b64(key), "signature": b64(alice.account.sign(key))}
        resp = await http.post(
            "/v1/prekeys", json={"signed_prekey": signed}, headers=auth_header(token)
        )
        _refused(resp, "invalid_key", "low-order")
        one_time = alice.one_time(device, 3)
        one_time[1]["public_key"] = b64(key)
        resp = await http.post(
            "/v1/prekeys", json={"one_time_prekeys": one_time}, headers=auth_header(token)
        )
        _refused(resp, "invalid_key", "low-order")
    assert await table_snapshot(relay.app) == before


async def test_a_weak_one_time_prekey_stored_before_the_check_is_discarded_at_claim(
    relay: Relay, http: httpx.AsyncClient
) -> None:
    # Keys stored before uploads were checked are re-checked when claimed: a weak one is
    # deleted and the next one handed out. Before, the weak key was handed out (and the
    # initiator's PQXDH then failed with InvalidPublicKey: bob unreachable by that bundle).
    from sqlalchemy import select, update

    from server.db.engine import write_lock
    from server.db.models import PREKEY_KIND_X25519, OneTimePrekey
    from server.state import relay_state

    bob = TestAccount.new("bob")
    body = bob.register_body(one_time=2)
    assert (await http.post("/v1/accounts", json=body)).status_code == 201
    weak = b"\x01" + WEAK_X25519[0]
    kind = OneTimePrekey.kind == PREKEY_KIND_X25519
    async with relay_state(relay.app).sessions() as session:
        # Reads, then writes: SQLite's write lock first (a plain BEGIN would fail at once with
        # "database is locked" if the relay committed in between — seen under load).
        await write_lock(session)
        ids = await session.execute(select(OneTimePrekey.id).where(kind).order_by(OneTimePrekey.id))
        oldest = ids.scalars().first()
        await session.execute(
            update(OneTimePrekey).where(OneTimePrekey.id == oldest).values(public_key=weak)
        )
        await session.commit()
    token = await TestAccount.new("alice").register_and_login(http)
    got = []
    for _ in range(2):
        resp = await http.get("/v1/prekeys/bob", headers=auth_header(token))
        assert resp.status_code == 200, resp.text
        (entry,) = resp.json()["devices"]
        got.append(entry["one_time_prekey"])
    second = body["prekeys"]["one_time_prekeys"][1]
    assert got == [{**second, "signature": ""}, None]
    async with relay_state(relay.app).sessions() as session:
        rows = (await session.execute(select(OneTimePrekey.public_key).where(kind))).all()
    assert all(bytes(r[0]) != weak for r in rows)
