"""The SQLite store writes some rows once per transaction rather than once per call: the search
tokens of new messages, new outbox entries, outbox attempts and outbox removals go out in one
statement each at the
commit (or before a statement that reads them), and are dropped with a rolled-back transaction.
What the store answers is the same as when each call wrote at once."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.sdk import message_rules
from clients.store import Direction, OutboxEntry, SqliteStore, StoredMessage, search
from clients.store.sealing import row_ad
from clients.store.sqlite import _rk
from crypto.encoding import Writer


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore.open(tmp_path / "p")
    yield s
    s.close()


def msg(mid: str, text: str) -> StoredMessage:
    return StoredMessage(mid, "bob", Direction.IN, "bob", 1, 1.0, 1.5, text)


def traced(store: SqliteStore) -> list[str]:
    log: list[str] = []
    store._conn.set_trace_callback(log.append)
    return log


def test_the_new_messages_of_a_transaction_write_their_search_tokens_in_one_statement(
    store: SqliteStore,
) -> None:
    log = traced(store)
    with store.transaction(sync=False):
        for i in range(5):
            store.add_message(msg(f"m{i}", f"hello word{i}"))
        # Searching inside the transaction sees them already.
        assert [m.message_id for m in store.search_messages("word3")] == ["m3"]
        store.add_message(msg("m5", "hello again"))
        store.add_message(msg("gone", "hello vanishing"))
        store.delete_message("gone")
    # Appended to search_pending before the search and at the commit; moved into the index
    # once, for the search.
    assert len([s for s in log if s.startswith("INSERT INTO search_pending")]) == 2
    assert len([s for s in log if s.startswith("INSERT OR IGNORE INTO search_tokens")]) == 1
    assert sorted(m.message_id for m in store.search_messages("hello")) == [
        f"m{i}" for i in range(6)
    ]
    assert store.search_messages("vanishing") == []


def test_a_rolled_back_transaction_leaves_no_tokens_attempts_or_removals(
    store: SqliteStore,
) -> None:
    store.outbox_put(OutboxEntry("o1", "bob", b"p", 1.0))
    with pytest.raises(RuntimeError), store.transaction():
        store.add_message(msg("m1", "rolled back"))
        store.outbox_attempted("o1")
        store.outbox_remove("o1")
        raise RuntimeError
    assert store.search_messages("rolled") == []
    assert [(e.message_id, e.attempts) for e in store.outbox_pending()] == [("o1", 0)]
    with store.transaction():
        store.add_message(msg("m1", "kept now"))
    assert [m.message_id for m in store.search_messages("kept")] == ["m1"]


def test_outbox_attempts_and_removals_are_one_statement_each_per_transaction(
    store: SqliteStore,
) -> None:
    ids = [f"o{i}" for i in range(5)]
    with store.transaction():
        for i, mid in enumerate(ids):
            store.outbox_put(OutboxEntry(mid, "bob", b"p", 1.0 + i))
    log = traced(store)
    with store.transaction():
        for mid in ids:
            store.outbox_attempted(mid)
        store.outbox_attempted("o0")
        # Read inside the transaction: the counts are there.
        assert [e.attempts for e in store.outbox_pending()] == [2, 1, 1, 1, 1]
        store.outbox_attempted("o1")
    updates = [s for s in log if s.startswith("UPDATE outbox")]
    # Before the read one per distinct count (+2 for o0, +1 for the rest), one at the commit.
    assert len(updates) == 3
    assert [e.attempts for e in store.outbox_pending()] == [2, 2, 1, 1, 1]
    log.clear()
    with store.transaction():
        for mid in ids[:4]:
            store.outbox_remove(mid)
        store.outbox_attempted("o0")  # removed already: nothing to count
        store.outbox_put(OutboxEntry("o2", "bob", b"again", 9.0))  # put back after removal
    assert len([s for s in log if s.startswith("DELETE FROM outbox")]) == 1
    assert not [s for s in log if s.startswith("UPDATE outbox")]
    assert [(e.message_id, e.attempts, e.payload) for e in store.outbox_pending()] == [
        ("o4", 1, b"p"),
        ("o2", 0, b"again"),
    ]


def test_new_outbox_entries_are_one_statement_per_transaction(store: SqliteStore) -> None:
    log = traced(store)
    with store.transaction():
        for i in range(4):
            store.outbox_put(OutboxEntry(f"n{i}", "bob", f"p{i}".encode(), 1.0 + i))
        store.outbox_attempted("n0")  # counted in the row it inserts: no UPDATE
        store.outbox_attempted("n0")
        store.outbox_remove("n3")  # never written
        assert [(e.message_id, e.attempts) for e in store.outbox_pending()] == [
            ("n0", 2),
            ("n1", 0),
            ("n2", 0),
        ]  # read inside the transaction: written first
        store.outbox_put(OutboxEntry("n4", "bob", b"p4", 5.0))
        store.outbox_attempted("n4")
    inserts = [s for s in log if s.startswith("INSERT OR REPLACE INTO outbox")]
    assert len(inserts) == 2  # before the read, and at the commit
    assert not [s for s in log if s.startswith("UPDATE outbox")]
    assert [(e.message_id, e.attempts, e.payload) for e in store.outbox_pending()] == [
        ("n0", 2, b"p0"),
        ("n1", 0, b"p1"),
        ("n2", 0, b"p2"),
        ("n4", 1, b"p4"),
    ]
    with pytest.raises(RuntimeError), store.transaction():
        store.outbox_put(OutboxEntry("n5", "bob", b"p5", 6.0))
        raise RuntimeError
    with store.transaction():
        store.outbox_put(OutboxEntry("n1", "bob", b"again", 7.0))  # replaces, attempts from it
        store.outbox_attempted("n2")
    assert [(e.message_id, e.attempts, e.payload) for e in store.outbox_pending()] == [
        ("n0", 2, b"p0"),
        ("n2", 1, b"p2"),
        ("n4", 1, b"p4"),
        ("n1", 0, b"again"),
    ]


def test_row_keys_associated_data_and_search_tokens_keep_their_format() -> None:
    """The fast paths write the documented bytes (a store written before still opens)."""
    for key in ("a1", "é" * 40, ""):
        assert _rk(key) == Writer().u8(0).str16(key).finish()
    assert _rk("bob", 7) == Writer().u8(0).str16("bob").u8(1).u64(7).finish()
    for table, row in (("messages", _rk("m1")), ("sessions", _rk("bob", 1)), ("kv", b"")):
        assert row_ad(table, row) == (
            Writer().raw(b"VoxStore-v1").u8(0).str16(table).bytes16(row).finish()
        )
    with pytest.raises(ValueError):
        row_ad("messages", b"x" * 0x10000)
    for store_key in (bytes(range(32)), bytes(range(100)), b"k"):
        assert search.tokens(store_key, {"hello", "wörld"}) == {
            hmac.new(store_key, w.encode(), hashlib.sha256).digest()[:8] for w in ("hello", "wörld")
        }


def test_an_expiry_sweep_that_finds_nothing_opens_no_write_transaction(
    store: SqliteStore,
) -> None:
    # The SDK sweeps every second per client: an idle sweep used to take the write lock and
    # commit (BEGIN IMMEDIATE ... COMMIT) even with nothing to delete.
    store.add_message(dataclasses.replace(msg("a" * 32, "kept"), expire_at=100.0))
    log = traced(store)
    assert message_rules.sweep(store, now=50.0) == []
    assert "BEGIN IMMEDIATE" not in log and "COMMIT" not in log
    assert message_rules.sweep(store, now=100.0) == ["a" * 32]  # one that is due still goes
    assert store.get_message("a" * 32) is None
    assert log.count("COMMIT") == 1


def test_a_flush_with_no_commit_since_the_last_fsync_does_not_fsync_again(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A receipt encrypted in its burst's transaction leaves the send builder nothing to
    # commit: its flush before writing the frame must not cost a second fsync.
    fsyncs: list[int] = []
    real = os.fsync

    def counted(fd: int) -> None:
        fsyncs.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counted)
    with store.transaction(sync=False):
        store.add_message(msg("a" * 32, "one"))
    store.flush()
    assert len(fsyncs) == 1
    store.flush()
    with store.transaction(sync=False):  # changes nothing
        store.add_message(msg("a" * 32, "one again"))
    store.flush()
    assert len(fsyncs) == 1  # old: one fsync per call
    with store.transaction(sync=False):
        store.add_message(msg("b" * 32, "two"))
    store.flush()
    assert len(fsyncs) == 2


def test_a_transaction_that_runs_no_statement_costs_no_begin_or_commit(
    store: SqliteStore,
) -> None:
    # E.g. the send builder's transaction for a batch of receipts encrypted with their burst,
    # or one that reads only what the store caches: BEGIN IMMEDIATE comes with the first
    # statement (old: at the block's start, and a COMMIT at its end, whatever it did).
    store.set_setting("k", "v")
    log = traced(store)
    with store.transaction(sync=False):
        assert store.get_setting("k") == "v"  # cached
        with store.transaction():
            pass
    assert log == []
    with store.transaction(sync=False):
        store.add_message(msg("a" * 32, "one"))
    assert log[0] == "BEGIN IMMEDIATE" and log[-1] == "COMMIT"
    assert log.count("BEGIN IMMEDIATE") == 1 and log.count("COMMIT") == 1
    log.clear()
    with pytest.raises(RuntimeError), store.transaction():
        store.add_message(msg("b" * 32, "rolled back"))
        raise RuntimeError
    assert log[-1] == "ROLLBACK" and store.get_message("b" * 32) is None
    log.clear()
    with pytest.raises(RuntimeError), store.transaction():
        raise RuntimeError
    assert log == []  # nothing begun: nothing to roll back


def test_a_session_written_again_is_updated_in_place(store: SqliteStore) -> None:
    # INSERT OR REPLACE deleted the row and appended it again (a new rowid, two more pages per
    # commit); an upsert keeps the row where it is.
    store.store_session("bob", 1, b"first")
    store.store_session("carol", 1, b"other")
    rowid = store._conn.execute("SELECT rowid FROM sessions WHERE username = 'bob'").fetchone()
    with store.transaction():
        store.store_session("bob", 1, b"second")
        store.store_session("dave", 2, b"new")
    assert store._conn.execute("SELECT rowid FROM sessions WHERE username = 'bob'").fetchone() == (
        rowid
    )
    store._sessions.clear()  # read back from the table
    assert store.load_session("bob", 1) == b"second"
    assert store.load_session("dave", 2) == b"new"
    assert store.session_devices("bob") == [1]


def test_a_batch_of_new_messages_is_one_insert_per_900_parameters(store: SqliteStore) -> None:
    store.add_message(msg("old", "stored before"))
    log = traced(store)
    batch = [msg(f"m{i}", f"word{i}") for i in range(200)] + [msg("old", "x"), msg("m1", "y")]
    with store.transaction(sync=False):
        assert store.add_messages(batch) == [True] * 200 + [False, False]
    # 200 rows of 11 parameters: 3 statements (old: add_message for each, 200).
    assert len([s for s in log if s.startswith("INSERT OR IGNORE INTO messages")]) == 3
    assert len([s for s in log if s.startswith("INSERT INTO search_pending")]) == 1
    assert [m.message_id for m in store.search_messages("word199")] == ["m199"]
