"""Shared helpers for the delivery tests (no tests here): app wiring, accounts, a WS client."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import func, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.asyncio.client import ClientConnection, connect

from server.app import create_app
from server.clock import Clock
from server.db.engine import create_engine
from server.db.migrate import upgrade
from server.db.models import Account, Device, OneTimePrekey
from server.db.models_delivery import DeliveryPayload, DeliverySend, QueueEntry
from server.delivery.repository import NewSend
from server.settings import Settings
from server.state import relay_state
from tests.server.relay_harness import Relay, TestAccount, make_settings, running_relay

__all__ = [
    "Peer",
    "World",
    "WsClient",
    "delivery_app",
    "open_ws",
    "payload",
    "seed_alice_and_bob",
    "setup_accounts",
    "world",
]


def delivery_app(settings: Settings, *, clock: Clock | None = None, **overrides: Any) -> FastAPI:
    """``create_app(settings, clock=clock)``; ``overrides`` tune ``DeliveryConfig`` fields
    (e.g. ``send_timeout=1.0``)."""
    app = create_app(settings, clock=clock)
    relay_state(app).delivery_overrides = overrides
    return app


@dataclass
class Peer:
    """One logged-in device of a test account."""

    user: str
    device: int
    token: str

    @property
    def ref(self) -> dict[str, Any]:
        """``{"user": ..., "device": ...}``."""
        return {"user": self.user, "device": self.device}


async def setup_accounts(
    http: httpx.AsyncClient, spec: Mapping[str, Sequence[int]]
) -> dict[tuple[str, int], Peer]:
    """Register each user with its devices (signed device lists) and log every device in."""
    peers: dict[tuple[str, int], Peer] = {}
    for user, device_ids in spec.items():
        account = TestAccount.new(user, list(device_ids))
        all_devices = list(account.devices)
        account.devices = all_devices[:1]
        token = await account.register_and_login(http)
        if len(all_devices) > 1:
            resp = await account.publish_devices(http, token, all_devices)
            assert resp.status_code == 200, resp.text
        for device in all_devices:
            tok = token if device is all_devices[0] else await account.login(http, device.device_id)
            peers[(user, device.device_id)] = Peer(user, device.device_id, tok)
    return peers


@dataclass
class WsClient:
    """A real ``websockets`` client speaking the Vox frame protocol."""

    ws: ClientConnection
    ready: dict[str, Any] = field(default_factory=dict)

    async def send(self, frame: dict[str, Any] | str) -> None:
        """Send a frame (a dict is JSON-encoded)."""
        await self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, wait: float = 5.0) -> dict[str, Any]:
        """The next frame, decoded."""
        raw = await asyncio.wait_for(self.ws.recv(), wait)
        value: dict[str, Any] = json.loads(raw)
        return value

    async def expect(self, kind: str, wait: float = 5.0) -> dict[str, Any]:
        """The next frame, which must be of type ``kind``."""
        frame = await self.recv(wait)
        assert frame["type"] == kind, frame
        return frame

    async def nothing(self, wait: float = 0.3) -> None:
        """Assert that no frame arrives for ``wait`` seconds."""
        try:
            frame = await asyncio.wait_for(self.ws.recv(), wait)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected frame {frame!r}")

    async def send_message(
        self, client_id: str, payloads: list[tuple[bytes, list[Peer]]], ephemeral: bool = False
    ) -> None:
        """Send a ``send`` frame."""
        await self.send(
            {
                "type": "send",
                "id": client_id,
                "payloads": [
                    {"data": base64.b64encode(data).decode(), "to": [p.ref for p in to]}
                    for data, to in payloads
                ],
                "ephemeral": ephemeral,
            }
        )

    async def closed(self, wait: float = 5.0) -> tuple[int | None, str | None]:
        """Wait for the close; return (code, reason) as received from the relay."""
        try:
            while True:
                await asyncio.wait_for(self.ws.recv(), wait)
        except Exception:
            pass
        rcvd = self.ws.protocol.close_rcvd
        return (rcvd.code, rcvd.reason) if rcvd else (None, None)


@dataclass
class World:
    """A running relay with logged-in devices."""

    relay: Relay
    peers: dict[tuple[str, int], Peer]

    def __getitem__(self, key: tuple[str, int]) -> Peer:
        return self.peers[key]

    async def count(self, model: Any) -> int:
        """Rows in ``model``'s table."""
        async with self.relay.state.sessions() as session:
            return int(
                (await session.execute(select(func.count()).select_from(model))).scalar_one()
            )

    async def counts(self) -> tuple[int, int, int]:
        """(sends, payloads, queue rows) — to assert that nothing was stored."""
        return (
            await self.count(DeliverySend),
            await self.count(DeliveryPayload),
            await self.count(QueueEntry),
        )

    async def wait_count(self, model: Any, expected: int, wait: float = 5.0) -> None:
        """Wait until ``model`` has ``expected`` rows."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while (n := await self.count(model)) != expected:
            assert loop.time() < deadline, f"{model.__name__}: {n} rows, expected {expected}"
            await asyncio.sleep(0.02)


@asynccontextmanager
async def world(
    tmp_path: Path,
    spec: Mapping[str, Sequence[int]],
    *,
    database_url: str | None = None,
    limits: dict[str, Any] | None = None,
    clock: Clock | None = None,
    **overrides: Any,
) -> AsyncIterator[World]:
    """A relay (SQLite in ``tmp_path`` unless ``database_url``) with accounts from ``spec``;
    ``clock`` is the relay's clock (a ``ShiftedClock`` lets the test move time)."""
    settings = make_settings(tmp_path, database_url=database_url, limits=limits or {})
    app = delivery_app(settings, clock=clock, **overrides)
    async with running_relay(settings, app=app) as relay:
        async with relay.client() as http:
            peers = await setup_accounts(http, spec)
        yield World(relay, peers)


@asynccontextmanager
async def open_ws(relay: Relay, peer: Peer | None, **kwargs: Any) -> AsyncIterator[WsClient]:
    """Connect to ``/v1/ws``; with a peer, authenticate and wait for ``ready``."""
    async with connect(relay.ws_url, compression=None, open_timeout=10, **kwargs) as ws:
        client = WsClient(ws)
        if peer is not None:
            await client.send({"type": "auth", "token": peer.token})
            client.ready = await client.expect("ready")
        yield client


def payload(n: int = 64) -> bytes:
    """Random opaque bytes."""
    return os.urandom(n)


def seed_alice_and_bob(conn: Connection, now: int = 1_700_000_000_000) -> tuple[int, int, int]:
    """Straight into the tables: alice and bob with one device each, and three one-time
    prekeys of bob's; returns (alice's device pk, bob's device pk, alice's account id)."""
    ids = []
    for name in ("alice", "bob"):
        account_id = conn.execute(
            insert(Account).returning(Account.id),
            {
                "username": name,
                "account_key": b"\x01" * 33,
                "device_list": b"",
                "device_list_version": 1,
                "created_at": now,
            },
        ).scalar_one()
        pk = conn.execute(
            insert(Device).returning(Device.pk),
            {
                "account_id": account_id,
                "device_id": 1,
                "identity_key": b"\x02" * 33,
                "auth_key": b"\x03" * 33,
                "created_at": now,
            },
        ).scalar_one()
        ids.append((account_id, pk))
    conn.execute(
        insert(OneTimePrekey),
        [
            {
                "device_pk": ids[1][1],
                "kind": 1,
                "key_id": k,
                "public_key": b"\x04" * 33,
                "signature": b"\x05" * 64,
            }
            for k in range(3)
        ],
    )
    return ids[0][1], ids[1][1], ids[0][0]


@dataclass(frozen=True)
class Seeded:
    """What :func:`seeded_database` seeded: alice's device and account, bob's device."""

    sender: int
    recipient: int
    account: int

    def send(self, envelope_id: str, client_id: str) -> NewSend:
        """A send from alice/1 to bob/1, ready for ``DeliveryRepository.insert_sends``."""
        return NewSend(
            envelope_id=envelope_id,
            sender_device_pk=self.sender,
            sender_account_id=self.account,
            sender_user="alice",
            sender_device_id=1,
            client_id=client_id,
            ts=1,
            expires_at=2**40,
            payloads=[(b"ciphertext", [self.recipient])],
        )


@asynccontextmanager
async def seeded_database(url: str) -> AsyncIterator[tuple[AsyncEngine, Seeded]]:
    """An engine on a migrated database with alice and bob seeded (no relay)."""
    engine = create_engine(url)
    try:
        await upgrade(engine)
        async with engine.begin() as conn:
            sender, recipient, account = await conn.run_sync(seed_alice_and_bob)
        yield engine, Seeded(sender, recipient, account)
    finally:
        await engine.dispose()
