"""PostgreSQL: a group-commit batch is two statements between BEGIN and COMMIT, whatever it
holds (docs/protocol-ws.md §11): the acks, de-duplication, device sets and the recipients'
queue locks and depths in one; the inserts in one. An ack-only batch is one statement. Each
statement is a round trip, and on PostgreSQL the relay waits on round trips, not on its CPU.

The queue count shares its round trip with the queue locks but must still see every row the
locks' previous holder committed while this batch waited (else the depth bound is not exact).
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, make_url, text
from sqlalchemy.engine import Connection

from server.db.engine import create_engine
from server.db.models_delivery import QueueEntry
from server.delivery.policy import QueueUsage
from server.delivery.repository import SESSION_FUNCTIONS, DeliveryRepository
from server.delivery.writer import AckOp, SendOp
from tests.server.ws_kit import open_ws, payload, seeded_database, world

pytestmark = pytest.mark.postgres


async def test_a_batch_is_two_statements_and_an_ack_batch_one(
    tmp_path: Path, postgres_url: str
) -> None:
    async with world(
        tmp_path,
        {"alice": [1], "bob": [1]},
        database_url=postgres_url,
        limits={"messages_per_second_per_device": 100_000.0},
        commit_max_wait=0.2,  # frames written back to back share a batch
    ) as w:
        writer = w.relay.state.delivery.writers[0]
        mine: set[int] = set()  # the writer's database connections
        batches: list[tuple[bool, bool, int]] = []  # (sends, acks, statements)
        statements = 0

        def count(conn: Connection, *_: Any) -> None:
            nonlocal statements
            if id(conn.connection.dbapi_connection) in mine:
                statements += 1

        apply = writer._apply

        def counted(conn: Connection, batch: Any) -> None:
            nonlocal statements
            mine.add(id(conn.connection.dbapi_connection))
            statements = 0
            apply(conn, batch)
            sends = any(isinstance(op, SendOp) for op in batch.ops)
            acks = any(isinstance(op, AckOp) for op in batch.ops)
            batches.append((sends, acks, statements))

        writer._apply = counted  # type: ignore[method-assign]
        event.listen(writer._engine.sync_engine, "before_cursor_execute", count)
        try:
            bob_ref = w["bob", 1].ref
            async with open_ws(w.relay, w["alice", 1]) as a, open_ws(w.relay, w["bob", 1]) as b:

                def send(n: int) -> dict[str, Any]:
                    data = base64.b64encode(payload()).decode()
                    return {
                        "type": "send",
                        "id": f"m{n}",
                        "payloads": [{"data": data, "to": [bob_ref]}],
                    }

                for n in range(5):
                    await a.send(send(n))
                for _ in range(5):
                    assert (await a.expect("accepted"))["type"] == "accepted"
                seqs = [(await b.expect("deliver"))["seq"] for _ in range(5)]
                # Acks and sends together, then acks alone.
                await b.send({"type": "ack", "seqs": seqs[:3]})
                for n in range(5, 8):
                    await a.send(send(n))
                for _ in range(3):
                    await a.expect("accepted")
                seqs += [(await b.expect("deliver"))["seq"] for _ in range(3)]
                await b.send({"type": "ack", "seqs": seqs[3:]})
                await w.wait_count(QueueEntry, 0)
                await writer.drained()
        finally:
            event.remove(writer._engine.sync_engine, "before_cursor_execute", count)
        assert batches and any(s for s, _, _ in batches) and any(a for _, a, _ in batches)
        for sends, _acks, n in batches:
            assert n == (2 if sends else 1), batches


@pytest.mark.parametrize("step", ["lock_queue_usage", "batch_reads"])
async def test_the_queue_count_sees_rows_committed_while_it_waited_for_the_lock(
    postgres_url: str, step: str
) -> None:
    repo = DeliveryRepository()

    def lock_and_count(c: Connection, bob: int) -> dict[int, QueueUsage]:
        if step == "lock_queue_usage":
            return repo.lock_queue_usage(c, [bob])
        held = repo.batch_reads(c, [], [], ["bob"], recipients=[("bob", 1)]).held
        assert held is not None
        return held

    async with seeded_database(postgres_url) as (engine, seeded):
        bob, alice_account = seeded.recipient, seeded.account
        send = seeded.send("e" * 32, "c1")
        async with engine.connect() as first, engine.connect() as second, engine.connect() as spy:
            await first.begin()
            usage = await first.run_sync(lambda c: lock_and_count(c, bob))
            assert usage[bob].depth == 0
            await first.run_sync(lambda c: repo.insert_sends(c, [send]))
            await second.begin()
            waiting = asyncio.create_task(second.run_sync(lambda c: lock_and_count(c, bob)))
            # Until the second batch waits for bob's queue lock, held by the first.
            while True:
                blocked = await spy.scalar(
                    text(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                        " AND NOT granted AND database = (SELECT oid FROM pg_database"
                        " WHERE datname = current_database())"
                    )
                )
                await spy.rollback()
                if blocked:
                    break
                assert not waiting.done()
                await asyncio.sleep(0.01)
            await first.commit()
            usage = await waiting
            assert (usage[bob].depth, usage[bob].by_sender) == (1, {alice_account: (1, 10)})
            await second.rollback()


async def test_without_the_temp_privilege_locks_and_counts_take_two_statements(
    postgres_url: str,
) -> None:
    """A role that may not create temporary objects gets no session function: the relay
    still serves (a warning, then the lock and the count as two statements)."""
    repo = DeliveryRepository()
    role = f"vox_notemp_{uuid.uuid4().hex[:12]}"
    async with seeded_database(postgres_url) as (engine, seeded):
        async with engine.begin() as conn:
            await conn.run_sync(repo.insert_sends, [seeded.send("e1", "c1")])
            database = await conn.scalar(text("SELECT current_database()"))
            await conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
            await conn.execute(text(f'REVOKE TEMP ON DATABASE "{database}" FROM PUBLIC'))
            await conn.execute(
                text(f'GRANT SELECT, INSERT, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"')
            )
        limited = create_engine(make_url(postgres_url).set(username=role).render_as_string())
        try:
            async with limited.begin() as conn:
                has_function, usage = await conn.run_sync(
                    lambda c: (
                        c.info.get(SESSION_FUNCTIONS),
                        repo.lock_queue_usage(c, [seeded.recipient]),
                    )
                )
            assert not has_function
            assert usage[seeded.recipient].depth == 1
        finally:
            await limited.dispose()
            async with engine.begin() as conn:
                await conn.execute(text(f'DROP OWNED BY "{role}"'))
                await conn.execute(text(f'DROP ROLE "{role}"'))
