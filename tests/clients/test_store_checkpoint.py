"""WAL checkpoints of the SQLite store run in the checkpointer's thread, not inside the commits
of the thread using the store (the SDK's event loop); the WAL stays bounded (real SQLite)."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from clients.store import SqliteStore, open_store
from clients.store import checkpoint as checkpoint_module

#: WAL frame: 24-byte header + a page; the file: a 32-byte header + frames.
PAGE = 4096
FRAME = PAGE + 24


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wal_size(home: Path) -> int:
    wal = home / "vox.db-wal"
    return wal.stat().st_size if wal.exists() else 0


def write_pages(store: SqliteStore, transactions: int, *, keys: int | None = None) -> None:
    """``transactions`` commits of a 16 KiB secret each (5 pages or so)."""
    for i in range(transactions):
        key = f"blob:{i if keys is None else i % keys}"
        store.set_secret(key, os.urandom(16_000))


@pytest.fixture
def no_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checkpointer's thread never runs a checkpoint by itself (as if every one failed)."""
    monkeypatch.setattr(checkpoint_module, "CHECKPOINT_COMMITS", 10**9)
    monkeypatch.setattr(checkpoint_module, "IDLE_SECONDS", 3600.0)


@pytest.mark.usefixtures("no_worker")
def test_commits_never_run_a_checkpoint(tmp_path: Path) -> None:
    # SQLite's default automatic checkpoint (1000 pages) would run inside one of these
    # commits, copying the WAL into vox.db in the committing thread.
    with open_store(tmp_path) as store:
        store.set_setting("start", "1")
        before = digest(tmp_path / "vox.db")
        write_pages(store, 300)  # ~1500 WAL pages
        assert digest(tmp_path / "vox.db") == before, "a commit checkpointed the WAL"
        assert wal_size(tmp_path) > 1000 * FRAME

        busy, log, done = store.checkpoint()  # the worker's passive checkpoint
        assert (busy, done) == (0, log) and log > 1000
        assert digest(tmp_path / "vox.db") != before
        size = wal_size(tmp_path)
        store.set_setting("next", "1")  # the next write starts the WAL over
        assert store.checkpoint()[1] < 20
        assert wal_size(tmp_path) == size
        assert store.get_secret("blob:299") is not None


@pytest.mark.usefixtures("no_worker")
def test_the_wal_stays_bounded_when_the_worker_never_checkpoints(tmp_path: Path) -> None:
    bound = (checkpoint_module.BACKSTOP_PAGES + 100) * FRAME
    with open_store(tmp_path) as store:
        write_pages(store, 1200, keys=20)  # ~6000 pages: past the backstop
        assert 1000 * FRAME < wal_size(tmp_path) <= bound


def test_the_worker_checkpoints_and_the_wal_stays_bounded(tmp_path: Path) -> None:
    bound = (checkpoint_module.BACKSTOP_PAGES + 100) * FRAME
    with open_store(tmp_path) as store:
        checkpointer = store._checkpointer
        assert checkpointer is not None
        write_pages(store, checkpoint_module.CHECKPOINT_COMMITS)
        deadline = time.monotonic() + 60  # waiting for the thread, not timing it
        while checkpointer.runs == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert checkpointer.runs >= 1 and checkpointer.failures == 0
        for _ in range(5):
            write_pages(store, 300, keys=20)
            assert wal_size(tmp_path) <= bound
        assert checkpointer.failures == 0


def test_close_leaves_no_wal_and_keeps_every_commit(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        write_pages(store, 200)
        assert wal_size(tmp_path) > 0
    assert wal_size(tmp_path) == 0
    with open_store(tmp_path) as store:
        assert store.get_secret("blob:199") is not None
        assert store.get_secret("blob:0") is not None
