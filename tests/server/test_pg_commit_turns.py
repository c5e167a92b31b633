"""PostgreSQL: one batch runs its statements at a time; the next one forms while it commits.

The writer keeps up to ``commit_pipeline`` batches in flight, but a batch that sends to the
same devices as the one before it waits inside its first statement for that batch's queue
locks until it commits: batches formed while another still ran its statements only split the
waiting operations into more, smaller batches (more statements and more lock waits per
message: ``bench/relay.py --database postgres`` measured 180 batches of 60 operations where
100 of 105 do the same work). So a batch is formed once the previous one has *sent* its
``COMMIT`` — its statements run while that commit is flushed, and it gathers every
operation that arrived meanwhile — and the answers still go out in batch order.
"""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Connection

from tests.server.ws_kit import open_ws, world

pytestmark = pytest.mark.postgres

SENDERS = 4
MESSAGES = 60


async def test_batches_run_statements_one_at_a_time_and_form_while_the_previous_commits(
    tmp_path: Path, postgres_url: str
) -> None:
    spec: dict[str, Sequence[int]] = {f"sender{i}": [1] for i in range(SENDERS)}
    spec["bob"] = [1]
    async with world(
        tmp_path,
        spec,
        database_url=postgres_url,
        limits={"messages_per_second_per_device": 100_000.0},
        commit_max_batch=4,  # (one writer, three batches in flight: the defaults)
        commit_max_wait=0.0,
    ) as w:
        writer = w.relay.state.delivery.writers[0]
        running = 0
        most = 0
        apply = writer._apply

        def counted(conn: Connection, batch: Any) -> None:
            nonlocal running, most
            running += 1
            most = max(most, running)
            try:
                apply(conn, batch)
            finally:
                running -= 1

        writer._apply = counted  # type: ignore[method-assign]
        bob = w["bob", 1]
        async with AsyncExitStack() as stack:
            senders = [
                await stack.enter_async_context(open_ws(w.relay, w[f"sender{i}", 1]))
                for i in range(SENDERS)
            ]
            receiver = await stack.enter_async_context(open_ws(w.relay, bob))

            async def send_all(i: int) -> list[int]:
                for n in range(MESSAGES):
                    data = struct.pack(">II", i, n) + b"\x00" * 24
                    await senders[i].send_message(f"m{n}", [(data, [bob])])
                return [
                    int((await senders[i].expect("accepted", wait=30))["id"][1:])
                    for _ in range(MESSAGES)
                ]

            async def receive() -> list[tuple[int, int]]:
                got: list[tuple[int, int]] = []
                for _ in range(SENDERS * MESSAGES):
                    frame = await receiver.expect("deliver", wait=30)
                    got.append(struct.unpack(">II", base64.b64decode(frame["data"])[:8]))
                    await receiver.send({"type": "ack", "seqs": [frame["seq"]]})
                return got

            receiving = asyncio.create_task(receive())
            answers = await asyncio.gather(*(send_all(i) for i in range(SENDERS)))
            delivered = await receiving
        for order in answers:
            assert order == list(range(MESSAGES))
        for i in range(SENDERS):
            assert [n for s, n in delivered if s == i] == list(range(MESSAGES))
        assert most == 1, f"{most} batches ran their statements at once"
        assert writer.peak_in_flight >= 2, "no batch formed while another committed"


async def test_the_writer_opens_its_connections_before_the_first_batch(
    tmp_path: Path, postgres_url: str
) -> None:
    """Opening a connection (and creating its session functions) takes round trips the first
    batches of a burst would otherwise wait for, one connection per batch in flight."""
    async with world(tmp_path, {"alice": [1]}, database_url=postgres_url, commit_pipeline=3) as w:
        writer = w.relay.state.delivery.writers[0]
        for _ in range(200):
            if len(writer._conns) == 3:
                break
            await asyncio.sleep(0.01)
        assert len(writer._conns) == 3
