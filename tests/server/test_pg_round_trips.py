"""PostgreSQL: a group-commit batch is three statements between BEGIN and COMMIT, whatever it
holds (docs/protocol-ws.md §11): the acks, de-duplication and device sets in one; the queue
locks and depths in one; the inserts in one. An ack-only batch is one statement. Each statement
is a round trip, and on PostgreSQL the relay waits on round trips, not on its CPU."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Connection

from server.db.models_delivery import QueueEntry
from server.delivery.writer import AckOp, SendOp
from tests.server.ws_kit import open_ws, payload, world

pytestmark = pytest.mark.postgres


async def test_a_batch_is_three_statements_and_an_ack_batch_one(
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
            assert n == (3 if sends else 1), batches
