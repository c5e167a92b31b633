"""Removing a device from the signed list drops everything the relay holds for it.

Runs the whole relay (core + delivery layer): the removed device's queued envelopes are
deleted (foreign keys cascade, on SQLite too), its open WebSocket is closed, its token dies,
and the remaining devices keep working.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from starlette.applications import Starlette

from server.db.models import Account, Device
from server.db.models_delivery import QueueEntry
from server.state import relay_state
from tests.server.relay_harness import TestAccount, make_settings, running_relay
from tests.server.ws_kit import Peer, delivery_app, open_ws, payload


async def _queued(app: Starlette, device_pk_of: dict[int, int], device_id: int) -> int:
    async with relay_state(app).sessions() as session:
        query = select(func.count()).where(QueueEntry.device_pk == device_pk_of[device_id])
        return int((await session.execute(query)).scalar_one())


async def _removal_flow(tmp_path: Path, database_url: str | None) -> None:
    settings = make_settings(tmp_path, database_url=database_url)
    app = delivery_app(settings)
    async with running_relay(settings, app=app) as relay, relay.client() as http:
        bob = TestAccount.new("bob", device_ids=(1, 2))
        bob_devices = list(bob.devices)
        bob.devices = bob_devices[:1]
        bob1_token = await bob.register_and_login(http)
        assert (await bob.publish_devices(http, bob1_token, bob_devices)).status_code == 200
        bob2_token = await bob.login(http, 2)
        alice = TestAccount.new("alice")
        alice_token = await alice.register_and_login(http)
        async with relay.state.sessions() as session:
            rows = (
                await session.execute(
                    select(Device.device_id, Device.pk)
                    .join(Account, Account.id == Device.account_id)
                    .where(Account.username == "bob")
                )
            ).all()
        pk_of = {int(d): int(pk) for d, pk in rows}
        alice_peer = Peer("alice", 1, alice_token)
        bob1, bob2 = Peer("bob", 1, bob1_token), Peer("bob", 2, bob2_token)
        async with open_ws(relay, alice_peer) as a:
            for i in range(3):
                await a.send_message(f"m{i}", [(payload(40), [bob1, bob2])])
                accepted = await a.expect("accepted")
                assert accepted["id"] == f"m{i}", accepted
        assert await _queued(relay.app, pk_of, 2) == 3
        async with open_ws(relay, bob2) as b2:
            await b2.expect("deliver")
            # Device 1 removes device 2 (new signed list, version 3).
            resp = await bob.publish_devices(http, bob1_token, bob_devices[:1])
            assert resp.status_code == 200, resp.text
            code, reason = await b2.closed()
            assert code is not None, "the removed device's socket must be closed"
            assert reason
        assert await _queued(relay.app, pk_of, 2) == 0
        assert await _queued(relay.app, pk_of, 1) == 3  # the kept device still has its copies
        resp = await http.get(
            "/v1/prekeys/count", headers={"Authorization": f"Bearer {bob2_token}"}
        )
        assert resp.status_code == 401
        async with open_ws(relay, bob1) as b1:
            got = [await b1.expect("deliver") for _ in range(3)]
            assert len({d["envelope"] for d in got}) == 3


async def test_removed_device_loses_its_queue_socket_and_token_on_sqlite(tmp_path: Path) -> None:
    await _removal_flow(tmp_path, None)


@pytest.mark.postgres
async def test_removed_device_loses_its_queue_socket_and_token_on_postgresql(
    tmp_path: Path, postgres_url: str
) -> None:
    await _removal_flow(tmp_path, postgres_url)
