"""The receive path a burst at a time: one store transaction per burst, one fsync off the event
loop, acks only after it (a SIGKILL in between loses and duplicates nothing), and coalesced
delivery receipts."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
import textwrap
import threading
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from clients.sdk import Message, ReceiptEvent, VoxClient, durable, inbox, peers
from clients.sdk.content import ReceiptKind
from clients.sdk.core import Core
from clients.sdk.engine import Process
from clients.sdk.protocol import SendReceipt
from clients.sdk.receipts import OWED_KEY, ReceiptSender
from clients.store import SqliteStore
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
BURST = 30


def hold_processor_until(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    """Let the processor start only once ``count`` deliveries wait: one burst of them."""
    real_run = inbox.run

    async def held(
        core: Core, deliveries: asyncio.Queue[Process], ack: Callable[[list[int]], Awaitable[None]]
    ) -> None:
        await wait_for(lambda: deliveries.qsize() >= count)
        await real_run(core, deliveries, ack)

    monkeypatch.setattr(inbox, "run", held)


async def test_a_burst_is_stored_in_one_transaction_fsynced_off_the_loop_then_acked(
    make_client: Factory, relay: Relay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = await make_client("alice"), await make_client("bob")
    await bob.close()
    for i in range(BURST):
        await alice.send_text("bob", f"m{i}")
    bob = await VoxClient.open(tmp_path / "bob")
    try:
        store = bob.store
        assert isinstance(store, SqliteStore)
        log: list[str] = []
        store._conn.set_trace_callback(log.append)
        flush, ack = store.flush, bob._ack

        def spied_flush() -> None:
            flush()
            log.append("FLUSH " + ("loop" if threading.current_thread() is main else "worker"))

        async def spied_ack(seqs: list[int]) -> None:
            log.append(f"ACK {len(seqs)}")
            await ack(seqs)

        main = threading.current_thread()
        monkeypatch.setattr(store, "flush", spied_flush)
        monkeypatch.setattr(bob, "_ack", spied_ack)
        hold_processor_until(monkeypatch, BURST)
        events = await bob.receive(wait=1.0)
        assert texts(events, "alice") == [f"m{i}" for i in range(BURST)]
        await wait_for_value(lambda: queued(relay, "bob"), 0)
    finally:
        await bob.close()
    inserts = [i for i, s in enumerate(log) if s.startswith("INSERT OR IGNORE INTO messages")]
    assert len(inserts) == 1  # the burst's messages in one statement (old: one per message)
    begin = max(i for i, s in enumerate(log[: inserts[0]]) if s == "BEGIN IMMEDIATE")
    commit = log.index("COMMIT", inserts[-1])
    assert "COMMIT" not in log[begin : inserts[-1]]  # every message in one transaction
    acked = log.index(f"ACK {BURST}", commit)  # the whole burst in one ack ...
    assert "FLUSH worker" in log[commit:acked]  # ... after an fsync in a worker thread
    assert not any(s.startswith("ACK") for s in log[:acked])


async def test_a_burst_whose_commit_fails_is_stored_again_one_by_one(
    make_client: Factory, relay: Relay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The burst decrypts (advancing bob's cached sessions), then its commit fails and rolls
    # back: the one-by-one retry must start from the sessions as the store has them, or every
    # message would be refused as a replay of keys the cache already used.
    alice, bob = await make_client("alice"), await make_client("bob")
    await alice.send_text("bob", "set-up")
    assert texts(await receive_texts(bob, "alice", 1), "alice") == ["set-up"]
    await bob.send_text("alice", "reply")  # alice's next messages are plain ratchet messages
    assert texts(await receive_texts(alice, "bob", 1), "bob") == ["reply"]
    await bob.close()
    for i in range(BURST):
        await alice.send_text("bob", f"f{i}")
    bob = await VoxClient.open(tmp_path / "bob")
    try:
        store = bob.store
        assert isinstance(store, SqliteStore)
        real_write = store._write_sessions
        failed: list[int] = []

        def fail_once() -> None:  # the first commit that writes sessions: the burst's
            if not failed and store._dirty_sessions:
                failed.append(1)
                raise OSError("disk full")
            real_write()

        monkeypatch.setattr(store, "_write_sessions", fail_once)
        hold_processor_until(monkeypatch, BURST)
        events = await bob.receive(wait=1.0)
        assert failed
        assert texts(events, "alice") == [f"f{i}" for i in range(BURST)]
        assert [m.text for m in bob.history("alice", limit=100)][-BURST:] == [
            f"f{i}" for i in range(BURST)
        ]
        await wait_for_value(lambda: queued(relay, "bob"), 0)
        await alice.send_text("bob", "after")
        await wait_for(lambda: bob.history("alice", limit=1)[0].text == "after")
    finally:
        await bob.close()


CHILD = """
import asyncio
from clients.sdk import VoxClient, inbox

real_run = inbox.run

async def held(core, deliveries, ack):
    while deliveries.qsize() < {burst}:
        await asyncio.sleep(0.01)
    await real_run(core, deliveries, ack)

inbox.run = held

async def main():
    client = await VoxClient.open({home!r})

    async def ack_then_hang(seqs):
        print("acking", len(seqs), flush=True)  # committed and flushed: now die
        await asyncio.Event().wait()

    client._ack = ack_then_hang
    await client.connect()
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_a_kill_between_the_bursts_commit_and_its_ack_loses_and_duplicates_nothing(
    make_client: Factory, relay: Relay, tmp_path: Path
) -> None:
    alice, bob = await make_client("alice"), await make_client("bob")
    await bob.close()
    for i in range(BURST):
        await alice.send_text("bob", f"k{i}")
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        textwrap.dedent(CHILD.format(burst=BURST, home=str(tmp_path / "bob"))),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    try:
        line = await asyncio.wait_for(child.stdout.readline(), 60)
        assert line == f"acking {BURST}\n".encode()
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    assert await queued(relay, "bob") == BURST  # nothing was acked
    bob = await VoxClient.open(tmp_path / "bob")
    try:
        events = await bob.receive(wait=1.0)  # the relay redelivers the whole burst ...
        await wait_for_value(lambda: queued(relay, "bob"), 0)
        assert not [e for e in events if isinstance(e, Message)]  # ... already stored: seen
        history = bob.history("alice", limit=100)
        assert [m.text for m in history] == [f"k{i}" for i in range(BURST)]  # each once
    finally:
        await bob.close()


async def burst_for_offline_bob(
    make_client: Factory, *, set_up: bool = False
) -> tuple[list[str], list[ReceiptEvent]]:
    """alice sends bob (offline) a burst; returns its ids and the receipts alice will get.
    ``set_up``: one message both ways first (sessions and device lists in place)."""
    alice, bob = await make_client("alice"), await make_client("bob")
    if set_up:
        await alice.send_text("bob", "set-up")
        assert texts(await receive_texts(bob, "alice", 1), "alice") == ["set-up"]
        await wait_for(lambda: bob.store.get_secret(OWED_KEY) is None)  # its receipt went
    await bob.close()
    sent = [(await alice.send_text("bob", f"r{i}")).id for i in range(BURST)]
    receipts: list[ReceiptEvent] = []  # for these (the set-up's comes too, it was owed)
    ours = set(sent)
    alice.on_event(
        lambda e: (
            receipts.append(e)
            if isinstance(e, ReceiptEvent) and ours & set(e.message_ids)
            else None
        )
    )
    await alice.connect()
    return sent, receipts


async def test_the_senders_receipt_lists_the_whole_burst(
    make_client: Factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent, receipts = await burst_for_offline_bob(make_client)
    bob = await VoxClient.open(tmp_path / "bob")
    try:
        hold_processor_until(monkeypatch, BURST)
        await bob.receive(wait=0.5)
        await wait_for(lambda: bool(receipts))
        await asyncio.sleep(0.3)
    finally:
        await bob.close()
    assert len(receipts) == 1 and sorted(receipts[0].message_ids) == sorted(sent)


async def test_a_burst_and_its_delivery_receipt_are_one_commit(
    make_client: Factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent, receipts = await burst_for_offline_bob(make_client, set_up=True)
    bob = await VoxClient.open(tmp_path / "bob")
    try:
        await peers.ensure_sessions(bob, {"alice", "bob"})  # fresh lists, as after any send
        store = bob.store
        assert isinstance(store, SqliteStore)
        log: list[str] = []
        store._conn.set_trace_callback(log.append)
        hold_processor_until(monkeypatch, BURST)
        await bob.receive(wait=0.5)
        await wait_for(lambda: sorted(i for r in receipts for i in r.message_ids) == sorted(sent))
    finally:
        await bob.close()
    assert len(receipts) == 1  # the whole burst in one receipt
    inserts = [i for i, s in enumerate(log) if s.startswith("INSERT OR IGNORE INTO messages")]
    assert len(inserts) == 1  # the burst's messages in one statement (old: one per message)
    commit = log.index("COMMIT", inserts[-1])
    # The receipt's ratchet step is written with the burst, in its transaction: bob's only
    # session writes come before the burst's COMMIT (old: the send builder's transaction
    # wrote alice's session again after it, a second commit and a second fsync).
    sessions = [i for i, s in enumerate(log) if s.startswith("INSERT") and "INTO sessions" in s]
    assert sessions and max(sessions) < commit


def ids(*numbers: int) -> tuple[bytes, ...]:
    return tuple(n.to_bytes(16, "big") for n in numbers)


async def test_receipts_wait_while_one_is_on_its_way_then_go_together() -> None:
    core = ReceiptRecorder(hold=True)
    sender = ReceiptSender(core)  # type: ignore[arg-type]
    delivered = ReceiptKind.DELIVERED
    sender.add([SendReceipt("alice", delivered, ids(1, 2))])
    await asyncio.sleep(0)
    sender.add([SendReceipt("alice", delivered, ids(3))])  # alice's receipt is on its way
    sender.add([SendReceipt("alice", delivered, ids(4)), SendReceipt("carol", delivered, ids(5))])
    sender.add([SendReceipt("alice", delivered, ids(*range(6, 606)))])
    await asyncio.sleep(0)
    assert [(to, r.ids) for to, r in core.sent] == [("alice", ids(1, 2)), ("carol", ids(5))]
    core.release.set()
    await asyncio.gather(*core.tasks)
    alice = [r.ids for to, r in core.sent if to == "alice"]
    assert alice == [ids(1, 2), ids(3, 4, *range(6, 504)), ids(*range(504, 606))]
    sender.add([SendReceipt("alice", delivered, ids(7))])  # idle again: sent at once
    await asyncio.gather(*core.tasks)
    assert core.sent[-1][1].ids == ids(7)


class SlowStore:
    """A stand-in store whose fsync waits for the test (and may fail)."""

    def __init__(self, error: OSError | None = None) -> None:
        self.calls = 0
        self.started = threading.Event()
        self.gate = threading.Event()
        self.error = error

    def synced(self) -> bool:
        return False

    def flush(self) -> None:
        self.calls += 1
        self.started.set()
        self.gate.wait(10)
        if self.error is not None:
            raise self.error


async def test_flushes_asked_for_during_an_fsync_share_the_next_one() -> None:
    store = SlowStore()
    first = asyncio.ensure_future(durable.flush(store))  # type: ignore[arg-type]
    await asyncio.to_thread(store.started.wait, 10)
    store.started.clear()
    later = [asyncio.ensure_future(durable.flush(store)) for _ in range(5)]  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert store.calls == 1 and not any(f.done() for f in later)
    store.gate.set()  # the first ends, the shared second one runs
    await asyncio.gather(first, *later)
    assert store.calls == 2


async def test_an_fsync_error_reaches_every_caller_sharing_it() -> None:
    store = SlowStore(OSError("disk gone"))
    callers = [asyncio.ensure_future(durable.flush(store)) for _ in range(3)]  # type: ignore[arg-type]
    store.gate.set()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert [str(r) for r in results] == ["disk gone"] * 3


async def test_a_closed_store_is_not_kept_alive_by_its_flushes(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "profile")
    store.set_setting("k", "v")  # a commit for the fsync to cover
    await durable.flush(store)
    store.close()
    gone = weakref.ref(store)
    del store
    gc.collect()
    assert gone() is None  # the flushers' table is keyed by the store, weakly
