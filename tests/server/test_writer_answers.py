"""The group-commit writer answers a connection's sends of one batch together
(``DeviceConnection.sends_answered``): one call with every answer, in the order the sends
came, encoded together and written to the socket in one transport write."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from server.delivery.connection import DeviceConnection
from server.delivery.writer import GroupCommitWriter
from tests.server.ws_kit import open_ws, payload, world

SENDS = 20


async def _until(condition: Any, what: str, wait: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while not condition():
        assert loop.time() < deadline, what
        await asyncio.sleep(0.01)


async def test_a_batchs_answers_to_one_connection_go_out_in_one_call_and_one_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first send's transaction is held in the writer's thread until the other sends are
    # all submitted: they then make the next batch, together.
    holding, release = threading.Event(), threading.Event()
    transaction = GroupCommitWriter._sqlite_transaction

    def held_once(self: GroupCommitWriter, batch: Any) -> None:
        if not holding.is_set():
            holding.set()
            release.wait(60)
        transaction(self, batch)

    calls: list[list[str]] = []
    answered = DeviceConnection.sends_answered

    def recording(self: DeviceConnection, answers: list[str]) -> None:
        calls.append(list(answers))
        answered(self, answers)

    monkeypatch.setattr(GroupCommitWriter, "_sqlite_transaction", held_once)
    monkeypatch.setattr(DeviceConnection, "sends_answered", recording)
    async with world(tmp_path, {"alice": [1], "bob": [1]}) as w:
        alice, bob = w["alice", 1], w["bob", 1]
        async with open_ws(w.relay, alice) as a, open_ws(w.relay, bob):
            (conn,) = [
                s
                for s in w.relay.state.hub.local_sinks()
                if isinstance(s, DeviceConnection) and s.device.user == "alice"
            ]
            await a.send_message("m0", [(payload(), [bob])])
            await asyncio.to_thread(holding.wait, 60)
            for n in range(1, SENDS + 1):
                await a.send_message(f"m{n}", [(payload(), [bob])])
            await _until(lambda: conn.pending_sends == SENDS + 1, "sends not all submitted")
            writes: list[int] = []
            transport = conn._proto.transport
            write = transport.write

            def counting(data: Any) -> None:
                writes.append(data.count(b'"type":"accepted"'))
                write(data)

            monkeypatch.setattr(transport, "write", counting)
            release.set()
            ids = [(await a.expect("accepted", wait=60))["id"] for _ in range(SENDS + 1)]
            assert ids == [f"m{n}" for n in range(SENDS + 1)]
            assert conn.pending_sends == 0
            # m0 alone, then m1..m20: one call per batch, in order, and one write each.
            assert [[json.loads(text)["id"] for text in c] for c in calls] == [
                ["m0"],
                [f"m{n}" for n in range(1, SENDS + 1)],
            ]
            assert writes == [1, SENDS]
