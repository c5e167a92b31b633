"""``durable.flush`` hands nothing to the store's fsync thread when every commit so far is
durable already (an fsync that started after the last changing commit completed): it returns
at once, without a thread round trip, instead of queueing a flush that would find nothing to
do (behind a running fsync, it would even wait for that one and the next)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.sdk import durable
from clients.store import MemoryStore, SqliteStore
from clients.store.models import Direction, StoredMessage


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore.open(tmp_path / "p")
    yield s
    s.close()


def msg(mid: str) -> StoredMessage:
    return StoredMessage(mid, "bob", Direction.IN, "bob", 1, 1.0, 1.5, "hello")


async def test_a_flush_with_every_commit_synced_does_not_reach_the_fsync_thread(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = store.flush

    def counted() -> None:  # what the fsync thread runs for each job
        calls.append(1)
        real()

    monkeypatch.setattr(store, "flush", counted)
    with store.transaction(sync=False):
        store.add_message(msg("a" * 32))
    assert not store.synced()
    await durable.flush(store)
    assert len(calls) == 1 and store.synced()
    await durable.flush(store)
    assert len(calls) == 1  # old: a second job (finding nothing to fsync)
    with store.transaction(sync=False):  # changes nothing: still synced
        store.add_message(msg("a" * 32))
    assert store.synced()
    await durable.flush(store)
    assert len(calls) == 1
    with store.transaction(sync=False):
        store.add_message(msg("b" * 32))
    assert not store.synced()
    await durable.flush(store)
    assert len(calls) == 2 and store.synced()


async def test_a_memory_store_is_always_synced() -> None:
    store = MemoryStore()
    assert store.synced()
    await durable.flush(store)
