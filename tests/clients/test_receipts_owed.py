"""Receipts are owed from the commit that makes them due until the relay took them
(:mod:`clients.sdk.receipts`): one that could not leave — the process was killed after the
burst's commit, the relay was unreachable when the messages were read — goes at the next
connection, so the sender's ticks do not stay one short."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, NoReturn

import pytest

from clients.sdk import ReceiptEvent, VoxClient
from clients.sdk.content import ReceiptKind
from clients.sdk.errors import RelayUnavailable
from clients.sdk.protocol import SendReceipt
from clients.sdk.receipts import MAX_OWED, OWED_KEY, OWED_TTL, SETTLE_DELAY, ReceiptSender
from clients.sdk.transport import RelaySocket
from clients.store import DeliveryState
from tests.clients.conftest import Factory
from tests.clients.kit import (
    ReceiptRecorder,
    queued,
    receive_texts,
    texts,
    wait_for,
    wait_for_value,
)
from tests.server.relay_harness import Relay

ROOT = Path(__file__).resolve().parents[2]

#: bob's process: it stores and fsyncs the burst, then hangs in its ack (before the ack, and
#: before the delivery receipts that follow it) until the test kills it.
CHILD = """
import asyncio
from clients.sdk import VoxClient

async def main():
    client = await VoxClient.open({home!r})

    async def ack_then_hang(seqs):
        print("acking", len(seqs), flush=True)
        await asyncio.Event().wait()

    client._ack = ack_then_hang
    await client.connect()
    await asyncio.Event().wait()

asyncio.run(main())
"""


def receipts_of(client: VoxClient, kind: DeliveryState) -> set[str]:
    """Message ids ``client`` has seen receipts of ``kind`` for (subscribed from now on)."""
    ids: set[str] = set()

    def collect(event: Any) -> None:
        if isinstance(event, ReceiptEvent) and event.kind is kind:
            ids.update(event.message_ids)

    client.on_event(collect)
    return ids


async def test_a_delivery_receipt_lost_to_a_kill_after_the_commit_goes_at_the_next_start(
    make_client: Factory, relay: Relay, tmp_path: Path
) -> None:
    alice, bob = await make_client("alice"), await make_client("bob")
    await bob.close()
    sent = [(await alice.send_text("bob", f"k{i}")).id for i in range(3)]
    delivered = receipts_of(alice, DeliveryState.DELIVERED)
    await alice.connect()
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        textwrap.dedent(CHILD.format(home=str(tmp_path / "bob"))),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    try:
        while not (await asyncio.wait_for(child.stdout.readline(), 60)).startswith(b"acking"):
            pass
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    await asyncio.sleep(0.5)
    assert not delivered  # nothing left bob's process
    bob = await VoxClient.open(tmp_path / "bob")
    try:
        assert bob.store.get_secret(OWED_KEY)  # what the killed process owed is on disk
        await bob.receive(wait=0.5)  # the redelivered burst is seen: it yields nothing new
        await wait_for_value(lambda: queued(relay, "bob"), 0)
        await wait_for(lambda: delivered >= set(sent))  # old: never (the receipt was lost)
        await wait_for(lambda: bob.store.get_secret(OWED_KEY) is None)  # taken: owed no more
        assert [m.text for m in bob.history("alice", limit=10)] == ["k0", "k1", "k2"]
    finally:
        await bob.close()


async def test_read_receipts_of_messages_read_offline_go_when_the_relay_is_back(
    make_client: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = await make_client("alice"), await make_client("bob")
    sent = [(await alice.send_text("bob", f"m{i}")).id for i in range(2)]
    assert texts(await receive_texts(bob, "alice", 2), "alice") == ["m0", "m1"]
    read = receipts_of(alice, DeliveryState.READ)
    await alice.connect()
    await bob.disconnect()
    connect = RelaySocket.connect

    async def unreachable(*args: object, **kwargs: object) -> NoReturn:
        raise RelayUnavailable("http://relay", "the test keeps the WebSocket down")

    monkeypatch.setattr(RelaySocket, "connect", unreachable)
    bob.engine.sends.offline_patience = 0.5
    assert await bob.mark_read("alice") == 2  # read on the plane: the receipt cannot go
    await bob.disconnect()
    assert bob.store.get_secret(OWED_KEY)
    monkeypatch.setattr(RelaySocket, "connect", connect)
    await asyncio.sleep(0.3)
    assert not read
    await bob.connect()  # back online
    await wait_for(lambda: read >= set(sent))  # old: never (the receipt was dropped)
    await wait_for(lambda: bob.store.get_secret(OWED_KEY) is None)


def ids(*numbers: int) -> tuple[bytes, ...]:
    return tuple(n.to_bytes(16, "big") for n in numbers)


async def test_owed_receipts_are_bounded_given_up_when_old_and_sent_once_taken() -> None:
    core = ReceiptRecorder()
    sender = ReceiptSender(core)  # type: ignore[arg-type]
    delivered, read = ReceiptKind.DELIVERED, ReceiptKind.READ
    with core.store.transaction():
        sender.owe([SendReceipt("alice", delivered, ids(*range(MAX_OWED + 10)))])
        again = SendReceipt("alice", delivered, ids(MAX_OWED + 9, MAX_OWED + 10))  # one new
        sender.owe([again, SendReceipt("carol", read, ids(7))])
    core.fail = True
    sender.resume()  # offline: nothing taken, everything still owed
    await asyncio.gather(*core.tasks)
    core.fail, core.tasks = False, []
    sender.resume()
    await asyncio.gather(*core.tasks)
    alice = [i for to, r in core.sent if to == "alice" for i in r.ids]
    assert alice == list(ids(*range(11, MAX_OWED + 11)))  # the newest MAX_OWED, each once
    assert [(to, r.kind, r.ids) for to, r in core.sent if to == "carol"] == [
        ("carol", read, ids(7))
    ]
    assert core.store.get_secret(OWED_KEY) is not None  # taken: written within SETTLE_DELAY
    await wait_for(lambda: core.store.get_secret(OWED_KEY) is None, SETTLE_DELAY + 5)
    sent, core.tasks = len(core.sent), []
    sender.resume()  # nothing owed: nothing sent again
    assert not core.tasks and len(core.sent) == sent

    with core.store.transaction():
        sender.owe([SendReceipt("dave", read, ids(9))])
    record = core.store.get_secret(OWED_KEY)
    assert record is not None
    entries = json.loads(record)
    entries[0]["at"] = time.time() - OWED_TTL - 1  # owed for longer than OWED_TTL
    core.store.set_secret(OWED_KEY, json.dumps(entries).encode())
    with core.store.transaction():
        sender.owe([SendReceipt("erin", read, ids(10))])
    before = len(core.sent)
    sender.resume()
    await asyncio.gather(*core.tasks)
    assert [(to, r.ids) for to, r in core.sent[before:]] == [("erin", ids(10))]  # dave's gone
    with core.store.transaction():  # a burst's commit takes the ids taken out of the record
        sender.owe([SendReceipt("fred", read, ids(11))])
    record = core.store.get_secret(OWED_KEY)
    assert record is not None and [e["to"] for e in json.loads(record)] == ["fred"]


async def test_receipts_owed_to_a_deleted_account_are_given_up() -> None:
    core = ReceiptRecorder()
    sender = ReceiptSender(core)  # type: ignore[arg-type]
    core.gone.add("zoe")
    with core.store.transaction():
        sender.owe([SendReceipt("zoe", ReceiptKind.READ, ids(1))])
    sender.resume()
    await asyncio.gather(*core.tasks)
    sender.write_taken()  # (what a disconnect does)
    assert not core.sent and core.store.get_secret(OWED_KEY) is None
