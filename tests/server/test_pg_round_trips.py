"""PostgreSQL: a group-commit batch is two statements between BEGIN and COMMIT, whatever it
holds (docs/protocol-ws.md §11): the acks, de-duplication, device sets and the recipients'
queue locks and depths in one; the inserts in one. An ack-only batch is one statement. Each
statement is a round trip, and on PostgreSQL the relay waits on round trips, not on its CPU:
under load the next batch's BEGIN goes in the same round trip as the previous COMMIT.

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
from sqlalchemy import make_url, text
from sqlalchemy.engine import Connection

from server.db.engine import create_engine
from server.db.models_delivery import QueueEntry
from server.delivery.policy import QueueUsage
from server.delivery.repository import SESSION_FUNCTIONS, DeliveryRepository
from server.delivery.writer import AckOp, GroupCommitWriter, SendOp
from tests.server.ws_kit import open_ws, payload, seeded_database, world

pytestmark = pytest.mark.postgres


def _log_queries(writer: GroupCommitWriter, queries: list[str]) -> None:
    """Append every query the writer's PostgreSQL connections send (asyncpg's query loggers:
    each round trip, BEGIN and COMMIT included) to ``queries``."""
    watched: set[int] = set()
    connection = writer._pg_connection

    async def logged_connection() -> Any:
        conn = await connection()
        driver: Any = conn.sync_connection.connection.driver_connection  # type: ignore[union-attr]
        if id(driver) not in watched:
            watched.add(id(driver))
            driver.add_query_logger(lambda record: queries.append(record.query))
        return conn

    writer._pg_connection = logged_connection  # type: ignore[method-assign]


def _without_type_introspection(queries: list[str]) -> list[str]:
    """The queries but asyncpg's own look-ups of the types of a statement's parameters (once
    per connection and type, the first time a statement uses it)."""
    return [q for q in queries if "typeinfo" not in q and "'jit'" not in q]


async def test_a_batch_is_two_statements_and_an_ack_batch_one(
    tmp_path: Path, postgres_url: str
) -> None:
    async with world(
        tmp_path,
        {"alice": [1], "bob": [1]},
        database_url=postgres_url,
        limits={"messages_per_second_per_device": 100_000.0},
        commit_max_wait=0.2,  # frames written back to back share a batch
        commit_pipeline=1,  # one batch at a time: each round trip belongs to the batch running
    ) as w:
        writer = w.relay.state.delivery.writers[0]
        # What the writer's connections send to the server (asyncpg's query loggers: every
        # round trip, BEGIN and COMMIT included), and per batch: (sends, acks, queries).
        queries: list[str] = []
        batches: list[tuple[bool, bool, list[str]]] = []
        _log_queries(writer, queries)
        transaction = writer._transaction

        async def counted(batch: Any) -> None:
            queries.clear()
            await transaction(batch)
            await asyncio.sleep(0)  # the loggers are called soon after each query
            sends = any(isinstance(op, SendOp) for op in batch.ops)
            acks = any(isinstance(op, AckOp) for op in batch.ops)
            batches.append((sends, acks, list(queries)))

        writer._transaction = counted  # type: ignore[method-assign]
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
        assert batches and any(s for s, _, _ in batches) and any(a for _, a, _ in batches)
        control = {"BEGIN", "COMMIT", "COMMIT; BEGIN"}
        begun = False  # the connection's transaction was begun by the previous commit
        for sends, _acks, everything in batches:
            sent = _without_type_introspection(everything)
            statements = [q for q in sent if q not in control]
            assert len(statements) == (2 if sends else 1), batches
            # BEGIN only when the previous COMMIT did not already send it, then the
            # statements, then the COMMIT: nothing else goes to the server.
            assert sent == ([] if begun else ["BEGIN"]) + statements + sent[-1:], batches
            assert sent[-1] in ("COMMIT", "COMMIT; BEGIN"), batches
            begun = sent[-1] == "COMMIT; BEGIN"


async def test_the_next_batch_begins_in_the_previous_commit_when_operations_wait(
    tmp_path: Path, postgres_url: str
) -> None:
    """Under load (operations already waiting when a batch commits), a batch is three round
    trips: its two statements and a ``COMMIT; BEGIN`` that opens the next batch's
    transaction on the same connection."""
    async with world(
        tmp_path,
        {"alice": [1], "bob": [1]},
        database_url=postgres_url,
        limits={"messages_per_second_per_device": 100_000.0},
        commit_max_wait=0.0,
        commit_pipeline=1,
    ) as w:
        writer = w.relay.state.delivery.writers[0]
        queries: list[str] = []
        _log_queries(writer, queries)
        # The first batch waits (before its BEGIN) until 39 more sends are queued behind it.
        started, gate = asyncio.Event(), asyncio.Event()
        transaction = writer._transaction

        async def held(batch: Any) -> None:
            if not started.is_set():
                started.set()
                await gate.wait()
            await transaction(batch)

        writer._transaction = held  # type: ignore[method-assign]
        queued, submit = asyncio.Event(), writer.submit

        def counted(op: Any) -> None:
            submit(op)
            if len(writer._ops) >= 39:
                queued.set()

        writer.submit = counted  # type: ignore[method-assign]
        bob_ref = w["bob", 1].ref
        data = base64.b64encode(payload()).decode()
        async with open_ws(w.relay, w["alice", 1]) as a:

            async def send(n: int) -> None:
                to = [bob_ref]
                await a.send(
                    {"type": "send", "id": f"m{n}", "payloads": [{"data": data, "to": to}]}
                )

            await send(0)
            await asyncio.wait_for(started.wait(), 10)
            for n in range(1, 40):
                await send(n)
            await asyncio.wait_for(queued.wait(), 10)
            gate.set()
            for _ in range(40):
                assert (await a.expect("accepted"))["type"] == "accepted"
            await writer.drained()
        await asyncio.sleep(0)
        sent = _without_type_introspection(queries)
        # Batch 1: BEGIN, its two statements, and a COMMIT that begins batch 2 (39 sends
        # waited); batch 2: its two statements and a plain COMMIT (nothing waits any more).
        assert len(sent) == 7, sent
        assert (sent[0], sent[3], sent[6]) == ("BEGIN", "COMMIT; BEGIN", "COMMIT"), sent
        assert not {sent[1], sent[2], sent[4], sent[5]} & {"BEGIN", "COMMIT", "COMMIT; BEGIN"}


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
                text(
                    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public"
                    f' TO "{role}"'
                )
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
