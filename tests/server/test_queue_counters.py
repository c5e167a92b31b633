"""The PostgreSQL queue counters (``delivery_queue_usage`` minus the pending removals in
``delivery_queue_removed``, migration 0011) always equal a real ``COUNT(*)`` / ``sum(size)``
of ``delivery_queue`` per device and sending account: through sends, acks, the expiry sweep,
a device's removal, an account's deletion, and writers on two relay nodes at once (acks and
sends crossing between them, the pattern that would deadlock if a delete updated a counter
that a writer holding the queue lock needs).

After each step the counters are compared with the table twice: as they stand (counters
minus pending removals), and as the writer reads them (folded under the queue locks, through
:meth:`DeliveryRepository.lock_queue_usage`), which must also leave no pending removal and
no zero counter behind for the devices read.
"""

from __future__ import annotations

import asyncio
import base64
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from server.accounts.service import deletion_message
from server.delivery.repository import DeliveryRepository
from tests.server.relay_harness import Relay, TestAccount, make_settings, running_relay
from tests.server.ws_kit import Peer, WsClient, delivery_app, open_ws, payload, setup_accounts
from wire.encoding import b64

pytestmark = pytest.mark.postgres

Usage = dict[tuple[int, int], tuple[int, int]]

_COUNTED = text(
    "SELECT device_pk, sender_account_id, count(*), sum(size) FROM delivery_queue"
    " GROUP BY device_pk, sender_account_id"
)
_COUNTERS = text(
    "SELECT device_pk, sender_account_id, sum(n), sum(b) FROM ("
    " SELECT device_pk, sender_account_id, count AS n, bytes AS b FROM delivery_queue_usage"
    " UNION ALL SELECT device_pk, sender_account_id, -count, -bytes"
    " FROM delivery_queue_removed) AS c"
    " GROUP BY device_pk, sender_account_id HAVING sum(n) <> 0 OR sum(b) <> 0"
)


_REMOVED = text(
    "SELECT device_pk, sender_account_id, sum(count), sum(bytes) FROM delivery_queue_removed"
    " GROUP BY device_pk, sender_account_id"
)


async def _rows(engine: AsyncEngine, statement: Any) -> Usage:
    async with engine.connect() as conn:
        rows = (await conn.execute(statement)).all()
    return {(int(d), int(s)): (int(n), int(b)) for d, s, n, b in rows}


async def _device_pks(engine: AsyncEngine) -> list[int]:
    async with engine.connect() as conn:
        return [int(pk) for (pk,) in (await conn.execute(text("SELECT pk FROM devices"))).all()]


async def assert_exact(engine: AsyncEngine) -> Usage:
    """Counters == COUNT(*) (as they stand, then as the writer reads them); returns them."""
    counted = await _rows(engine, _COUNTED)
    assert await _rows(engine, _COUNTERS) == counted
    pks = await _device_pks(engine)
    repo = DeliveryRepository()
    async with engine.begin() as conn:
        usage = await conn.run_sync(lambda c: repo.lock_queue_usage(c, pks))
        pending = await conn.scalar(
            text("SELECT count(*) FROM delivery_queue_removed WHERE device_pk = ANY(:p)"),
            {"p": pks},
        )
        zeros = await conn.scalar(text("SELECT count(*) FROM delivery_queue_usage WHERE count = 0"))
    read = {
        (pk, sender): used for pk, one in usage.items() for sender, used in one.by_sender.items()
    }
    assert read == counted
    for pk, one in usage.items():
        mine = [used for (device, _), used in counted.items() if device == pk]
        assert (one.depth, one.bytes) == (sum(n for n, _ in mine), sum(b for _, b in mine))
    assert pending == 0 and zeros == 0
    async with engine.begin() as conn:
        total = await conn.run_sync(repo.queue_depth_total)
    assert total == sum(n for n, _ in counted.values())
    # Nothing left for devices that no longer exist.
    assert set(await _rows(engine, _COUNTERS)) <= {(d, s) for d, s in counted}
    return counted


async def _wait_queue(engine: AsyncEngine, rows: int) -> None:
    for _ in range(500):
        async with engine.connect() as conn:
            if await conn.scalar(text("SELECT count(*) FROM delivery_queue")) == rows:
                return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the queue never held {rows} rows")


async def _accepted(ws: WsClient, n: int) -> list[dict[str, Any]]:
    out = []
    for _ in range(n):
        frame = await ws.recv(wait=15)
        if frame["type"] == "accepted":
            out.append(frame)
        else:
            assert frame["type"] == "deliver", frame
    return out


async def _send(
    ws: WsClient, client_id: str, to: list[Peer], size: int, ttl: int | None = None
) -> None:
    frame: dict[str, Any] = {
        "type": "send",
        "id": client_id,
        "payloads": [{"data": base64.b64encode(payload(size)).decode(), "to": [p.ref for p in to]}],
    }
    if ttl is not None:
        frame["ttl"] = ttl
    await ws.send(frame)


def _engine(relay: Relay) -> AsyncEngine:
    engine: AsyncEngine = relay.state.engine
    return engine


async def test_counters_stay_exact_through_send_ack_expiry_removal_and_deletion(
    tmp_path: Path, postgres_url: str
) -> None:
    settings = make_settings(tmp_path, database_url=postgres_url)
    async with running_relay(settings, app=delivery_app(settings)) as relay:
        engine = _engine(relay)
        async with relay.client() as http:
            peers = await setup_accounts(http, {"alice": [1]})
            carol_account = TestAccount.new("carol")
            carol = Peer("carol", 1, await carol_account.register_and_login(http))
            bob = TestAccount.new("bob", device_ids=(1, 2))
            bob_devices = list(bob.devices)
            bob.devices = bob_devices[:1]
            bob1_token = await bob.register_and_login(http)
            assert (await bob.publish_devices(http, bob1_token, bob_devices)).status_code == 200
            bob1 = Peer("bob", 1, bob1_token)
            bob2 = Peer("bob", 2, await bob.login(http, 2))
            alice = peers["alice", 1]
            assert await assert_exact(engine) == {}

            # Sends: two senders, two recipient devices, sizes that differ.
            async with open_ws(relay, alice) as a, open_ws(relay, carol) as c:
                for i in range(5):
                    await _send(a, f"a{i}", [bob1, bob2], 100 + i)
                for i in range(3):
                    await _send(c, f"c{i}", [bob1, bob2], 300 + i)
                assert len(await _accepted(a, 5)) == 5 and len(await _accepted(c, 3)) == 3
                # A short-lived one (expiry below).
                await _send(a, "short", [bob1, bob2], 77, ttl=60)
                (short,) = await _accepted(a, 1)
            await _wait_queue(engine, 18)
            before = await assert_exact(engine)
            assert sum(n for n, _ in before.values()) == 18 and len(before) == 4

            # Acks: bob 1 acks some of what it was delivered.
            async with open_ws(relay, bob1) as b1:
                delivered = [await b1.expect("deliver") for _ in range(9)]
                assert delivered[-1]["envelope"] == short["envelope"]
                await b1.send({"type": "ack", "seqs": [d["seq"] for d in delivered[:5]]})
                await _wait_queue(engine, 13)
            # Nobody sends to bob 1 now: the sweep folds the acks' removals in (nothing
            # expired), so they do not stay behind until bob 1's next message.
            assert await _rows(engine, _REMOVED) != {}
            assert await relay.state.delivery.sweep() == 0
            assert await _rows(engine, _REMOVED) == {}
            await assert_exact(engine)

            # Expiry: the sweep deletes the short-lived envelope only (both copies).
            service = relay.state.delivery
            assert await service.sweep(now=short["ts"] + 60_000) == 2
            await assert_exact(engine)

            # A device removed: bob's device 2 and its queue.
            resp = await bob.publish_devices(http, bob1_token, bob_devices[:1])
            assert resp.status_code == 200, resp.text
            await _wait_queue(engine, 3)
            left = await assert_exact(engine)

            # An account deleted: carol's sends leave bob 1's queue with her.
            signature = b64(carol_account.account.sign(deletion_message("carol")))
            resp = await http.request(
                "DELETE",
                "/v1/accounts/me",
                json={"signature": signature},
                headers={"Authorization": f"Bearer {carol.token}"},
            )
            assert resp.status_code == 204, resp.text
            async with engine.connect() as conn:
                kept = await conn.scalar(text("SELECT id FROM accounts WHERE username = 'alice'"))
            alice_left = {key: used for key, used in left.items() if key[1] == kept}
            n_left = sum(n for n, _ in alice_left.values())
            await _wait_queue(engine, n_left)
            assert await assert_exact(engine) == alice_left

            # What is left is acked: nothing queued, nothing counted.
            async with open_ws(relay, bob1) as b1:
                rest = [await b1.expect("deliver") for _ in range(n_left)]
                await b1.send({"type": "ack", "seqs": [d["seq"] for d in rest]})
                await _wait_queue(engine, 0)
            assert await assert_exact(engine) == {}
            # Nothing is left of who queued what for whom once it is acked (and swept).
            await relay.state.delivery.sweep()
            async with engine.connect() as conn:
                for table in ("delivery_queue_usage", "delivery_queue_removed"):
                    assert await conn.scalar(text(f"SELECT count(*) FROM {table}")) == 0


PEERS = 4
MESSAGES = 60


@pytest.mark.redis
async def test_counters_stay_exact_with_two_nodes_sending_and_acking_crosswise(
    tmp_path: Path, postgres_url: str, redis_url: str, redis_prefix: str
) -> None:
    """Peer i (on node i mod 2) sends to peer i+1 and to one offline device, and acks all it
    is delivered at once: batches on both nodes ack one queue while they fill another that
    the other node's batches ack. No send fails (a deadlock would fail a batch) and the
    counters match the queue, which ends with exactly the offline device's envelopes."""
    limits = {"messages_per_second_per_device": 10_000.0, "queue_share_per_sender": 1.0}
    async with AsyncExitStack() as stack:
        nodes: list[Relay] = []
        for i in range(2):
            settings = make_settings(
                tmp_path / f"node{i}",
                database_url=postgres_url,
                limits=limits,
                redis_url=redis_url,
                redis_prefix=redis_prefix,
            )
            nodes.append(
                await stack.enter_async_context(
                    running_relay(settings, app=delivery_app(settings), run_migrations=i == 0)
                )
            )
        engine = _engine(nodes[0])
        async with nodes[0].client() as http:
            peers = await setup_accounts(
                http, {"offline": [1], **{f"peer{i}": [1] for i in range(PEERS)}}
            )
        offline = peers["offline", 1]
        clients = [
            await stack.enter_async_context(open_ws(nodes[i % 2], peers[f"peer{i}", 1]))
            for i in range(PEERS)
        ]

        async def run(i: int, ws: WsClient) -> tuple[int, int]:
            accepted = delivered = 0
            for n in range(MESSAGES):
                await _send(ws, f"m{n}", [peers[f"peer{(i + 1) % PEERS}", 1], offline], 50 + n)
            while accepted < MESSAGES or delivered < MESSAGES:
                frame = await ws.recv(wait=30)
                if frame["type"] == "accepted":
                    accepted += 1
                elif frame["type"] == "deliver":
                    delivered += 1
                    await ws.send({"type": "ack", "seqs": [frame["seq"]]})
                else:
                    raise AssertionError(frame)
            return accepted, delivered

        results = await asyncio.gather(*(run(i, ws) for i, ws in enumerate(clients)))
        assert results == [(MESSAGES, MESSAGES)] * PEERS
        await _wait_queue(engine, PEERS * MESSAGES)
        counted = await assert_exact(engine)
        assert sum(n for n, _ in counted.values()) == PEERS * MESSAGES
        assert {device for device, _ in counted} == {await _pk(engine, "offline")}
        for node in nodes:
            await assert_exact(_engine(node))


async def _pk(engine: AsyncEngine, user: str) -> int:
    async with engine.connect() as conn:
        pk = await conn.scalar(
            text(
                "SELECT d.pk FROM devices AS d JOIN accounts AS a ON a.id = d.account_id"
                " WHERE a.username = :u"
            ),
            {"u": user},
        )
    return int(pk)


async def test_counters_follow_any_statement_and_the_migration_fills_them(
    postgres_url: str,
) -> None:
    """Statements the relay never runs keep the counters exact too (a ``DELETE`` of another
    shape, an ``UPDATE`` of a queue row's device, size and sender, ``TRUNCATE``), and
    migration 0011 fills them from a queue that already holds envelopes."""
    from server.db.migrate import alembic_config
    from tests.server.ws_kit import seeded_database

    repo = DeliveryRepository()
    async with seeded_database(postgres_url) as (engine, seeded):
        async with engine.begin() as conn:
            await conn.run_sync(
                repo.insert_sends, [seeded.send(f"e{i}", f"c{i}") for i in range(9)]
            )
        await assert_exact(engine)
        statements = [
            "DELETE FROM delivery_queue WHERE seq IN (SELECT min(seq) FROM delivery_queue)",
            "UPDATE delivery_queue SET size = size + 5, sender_account_id = 7"
            " WHERE seq IN (SELECT max(seq) FROM delivery_queue)",
            f"UPDATE delivery_queue SET device_pk = {seeded.sender}"
            " WHERE seq IN (SELECT min(seq) FROM delivery_queue)",
        ]
        for sql in statements:
            async with engine.begin() as conn:
                await conn.execute(text(sql))
            await assert_exact(engine)
        async with engine.begin() as conn:
            await conn.execute(text("TRUNCATE delivery_queue"))
        assert await assert_exact(engine) == {}

        # Back to 0010 (no counters), envelopes queued, then 0011 again.
        def migrate(conn: Any, target: str, down: bool) -> None:
            from alembic import command

            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            (command.downgrade if down else command.upgrade)(cfg, target)

        async with engine.begin() as conn:
            await conn.run_sync(migrate, "0010", True)
            await conn.run_sync(
                repo.insert_sends, [seeded.send(f"f{i}", f"d{i}") for i in range(5)]
            )
            await conn.run_sync(migrate, "0011", False)
        counted = await assert_exact(engine)
        assert counted == {(seeded.recipient, seeded.account): (5, 50)}
