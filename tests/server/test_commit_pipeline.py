"""PostgreSQL: the group-commit writer keeps several batches in flight and still answers in order.

With tiny batches (two operations) and four of them in flight, batches whose recipients do
not overlap commit in whatever order PostgreSQL finishes them. The relay must still answer a
connection's sends in the order it sent them, deliver each recipient a sender's envelopes in
send order, and never answer ``accepted`` before the send is committed (seen here from a
separate database connection the moment the answer arrives).
"""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text

from server.delivery.repository import DeliveryRepository
from tests.server.relay_harness import make_settings, running_relay
from tests.server.ws_kit import (
    WsClient,
    delivery_app,
    open_ws,
    seeded_database,
    setup_accounts,
    world,
)

pytestmark = pytest.mark.postgres

RECIPIENTS = 6
MESSAGES = 180


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _numbered(sender: int, n: int) -> bytes:
    return struct.pack(">II", sender, n) + b"\x00" * 24


async def test_pipelined_batches_answer_and_deliver_in_each_connections_order(
    tmp_path: Path, postgres_url: str
) -> None:
    spec: dict[str, Sequence[int]] = {"alice": [1], "carol": [1]}
    spec.update({f"rcpt{i}": [1] for i in range(RECIPIENTS)})
    async with world(
        tmp_path,
        spec,
        database_url=postgres_url,
        limits={"messages_per_second_per_device": 100_000.0},
        commit_writers=1,
        commit_pipeline=4,
        commit_max_batch=2,
        commit_max_wait=0.0,
    ) as w:
        db = await asyncpg.create_pool(_dsn(postgres_url), min_size=2, max_size=2)
        senders = {"alice": 0, "carol": 1}
        try:
            async with AsyncExitStack() as stack:
                alice = await stack.enter_async_context(open_ws(w.relay, w["alice", 1]))
                carol = await stack.enter_async_context(open_ws(w.relay, w["carol", 1]))
                receivers = [
                    await stack.enter_async_context(open_ws(w.relay, w[f"rcpt{i}", 1]))
                    for i in range(RECIPIENTS)
                ]
                received: dict[int, list[tuple[int, int]]] = {i: [] for i in range(RECIPIENTS)}

                async def send_all(ws: WsClient, sender: int) -> None:
                    # Round robin over the recipients: consecutive batches hold disjoint
                    # recipients, so they do not wait for each other's queue locks.
                    for n in range(MESSAGES):
                        to = w[f"rcpt{n % RECIPIENTS}", 1]
                        await ws.send_message(f"m{n}", [(_numbered(sender, n), [to])])

                async def answers(ws: WsClient) -> list[int]:
                    order = []
                    for _ in range(MESSAGES):
                        frame = await ws.expect("accepted", wait=30)
                        # Committed: visible to another connection right now.
                        row = await db.fetchval(
                            "SELECT count(*) FROM delivery_sends WHERE envelope_id = $1",
                            frame["envelope"],
                        )
                        assert row == 1, f"accepted before commit: {frame}"
                        order.append(int(frame["id"][1:]))
                    return order

                async def receive(i: int, ws: WsClient) -> None:
                    while len(received[i]) < 2 * MESSAGES // RECIPIENTS:
                        frame = await ws.expect("deliver", wait=30)
                        data = base64.b64decode(frame["data"])
                        received[i].append(struct.unpack(">II", data[:8]))
                        await ws.send({"type": "ack", "seqs": [frame["seq"]]})

                results = await asyncio.gather(
                    send_all(alice, senders["alice"]),
                    send_all(carol, senders["carol"]),
                    answers(alice),
                    answers(carol),
                    *(receive(i, ws) for i, ws in enumerate(receivers)),
                )
            assert results[2] == list(range(MESSAGES)), "alice's answers out of order"
            assert results[3] == list(range(MESSAGES)), "carol's answers out of order"
            for i, frames in received.items():
                for sender in senders.values():
                    got = [n for s, n in frames if s == sender]
                    assert got == list(range(i, MESSAGES, RECIPIENTS)), (i, sender, got)
            writer = w.relay.state.delivery.writers[0]
            assert writer.peak_in_flight >= 2, "the batches never overlapped"
        finally:
            await db.close()


async def test_a_send_stored_meanwhile_by_another_transaction_is_skipped_not_an_error(
    postgres_url: str,
) -> None:
    repo = DeliveryRepository()
    async with seeded_database(postgres_url) as (engine, seeded):
        send, recipient = seeded.send, seeded.recipient
        async with engine.begin() as conn:
            first = await conn.run_sync(repo.insert_sends, [send("e1", "c1")])
        assert first.conflicts == [] and len(first.per_device[recipient]) == 1
        async with engine.begin() as conn:
            again = await conn.run_sync(repo.insert_sends, [send("e2", "c1"), send("e3", "c2")])
        # The repeated client id stored nothing (no payload, no queue row); the new one did.
        assert [s.envelope_id for s in again.conflicts] == ["e2"]
        assert len(again.per_device[recipient]) == 1
        async with engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM delivery_sends),"
                    " (SELECT count(*) FROM delivery_payloads),"
                    " (SELECT count(*) FROM delivery_queue)"
                )
            )
            assert tuple(rows.one()) == (2, 2, 2)


async def test_two_nodes_storing_the_same_sends_answer_one_envelope_each(
    tmp_path: Path, postgres_url: str
) -> None:
    # The same device connected to two nodes sends the same client ids on both at once.
    limits = {"messages_per_second_per_device": 100_000.0}
    nodes = []
    settings = [
        make_settings(tmp_path / f"n{i}", database_url=postgres_url, limits=limits)
        for i in range(2)
    ]
    async with (
        running_relay(settings[0], app=delivery_app(settings[0], commit_max_batch=8)) as n0,
        running_relay(
            settings[1], app=delivery_app(settings[1], commit_max_batch=8), run_migrations=False
        ) as n1,
    ):
        nodes = [n0, n1]
        async with n0.client() as http:
            peers = await setup_accounts(http, {"alice": [1], "bob": [1]})
        alice, bob = peers["alice", 1], peers["bob", 1]
        count = 60
        async with open_ws(nodes[0], alice) as a0, open_ws(nodes[1], alice) as a1:

            async def run(ws: WsClient) -> dict[str, str]:
                for n in range(count):
                    await ws.send_message(f"d{n}", [(b"x" * 16, [bob])])
                out = {}
                for _ in range(count):
                    frame = await ws.expect("accepted", wait=30)
                    out[frame["id"]] = frame["envelope"]
                return out

            first, second = await asyncio.gather(run(a0), run(a1))
        assert first == second, "the two nodes answered different envelopes"
        db = await asyncpg.connect(_dsn(postgres_url))
        try:
            assert await db.fetchval("SELECT count(*) FROM delivery_sends") == count
            assert await db.fetchval("SELECT count(*) FROM delivery_queue") == count
        finally:
            await db.close()
