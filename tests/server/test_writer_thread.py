"""The SQLite group-commit writer's own thread (``server.delivery.writer``) and the bulk
send-latency histogram it feeds (``server.metrics.BulkHistogram``)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from server.delivery.checkpoint import BACKSTOP_PAGES, CHECKPOINT_COMMITS, WalCheckpointer
from server.delivery.writer import GroupCommitWriter, SendOp
from server.metrics import BulkHistogram
from tests.server.ws_kit import open_ws, payload, world


async def test_every_transaction_runs_in_the_writers_one_thread_which_stop_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[threading.Thread] = []
    transaction = GroupCommitWriter._sqlite_transaction

    def recording(self: GroupCommitWriter, batch: Any) -> None:
        threads.append(threading.current_thread())
        transaction(self, batch)

    monkeypatch.setattr(GroupCommitWriter, "_sqlite_transaction", recording)
    async with world(tmp_path, {"alice": [1], "bob": [1]}) as w:
        alice, bob = w["alice", 1], w["bob", 1]
        writer = w.relay.state.delivery.writers[0]
        async with open_ws(w.relay, alice) as a, open_ws(w.relay, bob) as b:
            for round_ in range(3):  # separate batches: each waits for the previous answer
                await a.send_message(f"m{round_}", [(payload(), [bob])])
                assert (await a.expect("accepted"))["id"] == f"m{round_}"
                frame = await b.expect("deliver")
                await b.send({"type": "ack", "seqs": [frame["seq"]]})
                await w.relay.state.delivery.drained()
        assert len(threads) >= 3  # a batch per send at least
        assert len(set(threads)) == 1
        assert threads[0] is not threading.main_thread()
        assert threads[0].name == "vox-writer"
    # The relay stopped: the writer's thread ended and closed its connection.
    assert not threads[0].is_alive()
    assert writer._sqlite_conn is None


async def test_a_failed_transaction_in_the_writer_thread_answers_an_error_and_the_next_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    transaction = GroupCommitWriter._sqlite_transaction
    failures = [RuntimeError("disk I/O error")]

    def failing_once(self: GroupCommitWriter, batch: Any) -> None:
        if failures:
            raise failures.pop()
        transaction(self, batch)

    monkeypatch.setattr(GroupCommitWriter, "_sqlite_transaction", failing_once)
    async with world(tmp_path, {"alice": [1], "bob": [1]}) as w:
        alice, bob = w["alice", 1], w["bob", 1]
        async with open_ws(w.relay, alice) as a:
            await a.send_message("lost", [(payload(), [bob])])
            error = await a.expect("error")
            assert error["code"] == "internal" and error["id"] == "lost"
            await a.send_message("kept", [(payload(), [bob])])
            assert (await a.expect("accepted"))["id"] == "kept"


def test_observe_many_counts_exactly_as_one_observe_per_amount() -> None:
    buckets = (0.125, 0.25, 1.0, 4.0)  # and amounts in eighths: every sum is exact
    amounts = [0.0, 0.125, 0.125, 0.25, 0.375, 1.0, 1.125, 4.0, 4.125, 1024.0, -1.0, 0.5, 0.25]
    one, many = CollectorRegistry(), CollectorRegistry()
    single = Histogram("lat", "latency", buckets=buckets, registry=one)
    # A prometheus_client registry (the reference's exposition) takes any collector at run time;
    # the relay's metrics are typed for the relay's own registry.
    bulk = BulkHistogram("lat", "latency", buckets=buckets, registry=many)  # type: ignore[arg-type]
    for amount in amounts:
        single.observe(amount)
    bulk.observe_many(amounts[:5])
    bulk.observe_many([])
    bulk.observe_many(amounts[5:])

    def samples(registry: CollectorRegistry) -> list[str]:
        return [
            line
            for line in generate_latest(registry).decode().splitlines()
            if not line.startswith("lat_created")
        ]

    assert samples(many) == samples(one)


async def test_the_send_latency_histogram_counts_every_accepted_send(tmp_path: Path) -> None:
    async with world(tmp_path, {"alice": [1], "bob": [1]}) as w:
        alice, bob = w["alice", 1], w["bob", 1]
        async with open_ws(w.relay, alice) as a:
            for i in range(12):  # several sends per batch, answered together
                await a.send_message(f"m{i}", [(payload(), [bob])])
            for i in range(12):
                assert (await a.expect("accepted"))["id"] == f"m{i}"
        registry = w.relay.state.metrics.registry
        assert registry.get_sample_value("vox_send_accepted_seconds_count") == 12
        assert registry.get_sample_value("vox_sends_accepted_total") == 12


async def _until(condition: Callable[[], bool]) -> None:
    """Wait for another thread's work (generous: a loaded machine; no timing asserted)."""
    for _ in range(3000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


async def test_the_writers_commits_leave_wal_checkpoints_to_the_checkpointer_thread(
    tmp_path: Path,
) -> None:
    async with world(tmp_path, {"alice": [1], "bob": [1]}) as w:
        alice, bob = w["alice", 1], w["bob", 1]
        writer = w.relay.state.delivery.writers[0]
        async with open_ws(w.relay, alice) as a:
            for i in range(CHECKPOINT_COMMITS + 4):  # a commit each
                await a.send_message(f"m{i}", [(payload(), [bob])])
                assert (await a.expect("accepted"))["id"] == f"m{i}"
        checkpointer = writer._checkpointer
        assert checkpointer is not None
        await _until(lambda: checkpointer.runs > 0)
        assert checkpointer.failures == 0
        # SQLite's own checkpoint inside the writer's COMMIT is only the backstop.
        conn = writer._sqlite_conn
        assert conn is not None
        raw: Any = conn.connection.driver_connection
        assert raw.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == BACKSTOP_PAGES
    assert checkpointer._thread is not None and not checkpointer._thread.is_alive()


async def test_a_checkpointer_copies_the_wal_into_the_database_after_enough_commits(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")  # nothing but the checkpointer
    db.execute("CREATE TABLE t (x BLOB)")
    checkpointer = WalCheckpointer(str(path))
    try:
        for _ in range(CHECKPOINT_COMMITS):
            db.execute("INSERT INTO t VALUES (randomblob(8192))")
            checkpointer.committed()
        assert path.stat().st_size < 8192 * 4  # everything is in the WAL still
        # The rows reach the database file (only a checkpoint writes there).
        await _until(lambda: path.stat().st_size > 8192 * CHECKPOINT_COMMITS)
        assert checkpointer.runs > 0 and checkpointer.failures == 0
    finally:
        checkpointer.close()
        db.close()
    assert not checkpointer._thread.is_alive()


async def test_sends_arriving_during_a_transaction_all_join_the_next_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch is sealed when the writer can take it, not ``max_wait`` after its first
    operation while the previous transaction still runs (which left later sends a whole
    further cycle behind: batch sizes alternated big and small)."""
    batches: list[list[str]] = []
    release = threading.Event()
    transaction = GroupCommitWriter._sqlite_transaction

    def held(self: GroupCommitWriter, batch: Any) -> None:
        batches.append([op.client_id for op in batch.ops if isinstance(op, SendOp)])
        if len(batches) == 1:
            release.wait(60)
        transaction(self, batch)

    monkeypatch.setattr(GroupCommitWriter, "_sqlite_transaction", held)
    async with world(tmp_path, {"alice": [1], "bob": [1]}) as w:
        alice, bob = w["alice", 1], w["bob", 1]
        async with open_ws(w.relay, alice) as a:
            await a.send_message("first", [(payload(), [bob])])
            await _until(lambda: len(batches) == 1)  # its transaction runs (held)
            await a.send_message("second", [(payload(), [bob])])
            await asyncio.sleep(0.1)  # far past max_wait (2 ms)
            await a.send_message("third", [(payload(), [bob])])
            await asyncio.sleep(0.1)
            release.set()
            for name in ("first", "second", "third"):
                assert (await a.expect("accepted"))["id"] == name
    assert batches == [["first"], ["second", "third"]]
