"""The SQLite store appends new messages' search tokens to ``search_pending`` (its last page)
and moves them into the ``search_tokens`` index (random keys) in batches: at
``MERGE_TOKENS`` pending rows, and before anything reads or deletes index rows. Searches
answer the same as if every token went into the index at once; a schema 2 store migrates."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.store import Direction, SqliteStore, StoredMessage
from clients.store import sqlite as store_sqlite


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore.open(tmp_path / "p") as opened:
        yield opened


def msg(n: int, text: str) -> StoredMessage:
    return StoredMessage(f"{n:032x}", "bob", Direction.IN, "bob", 1, float(n), float(n), text)


def rows(store: SqliteStore, table: str) -> int:
    return int(store._conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def test_a_commit_of_new_messages_appends_their_tokens_and_leaves_the_index_alone(
    store: SqliteStore,
) -> None:
    log: list[str] = []
    store._conn.set_trace_callback(log.append)
    with store.transaction(sync=False):
        for n in range(5):
            store.add_message(msg(n, f"hello word{n}"))
    assert not [s for s in log if "search_tokens" in s]  # no random-key index page written
    assert len([s for s in log if s.startswith("INSERT INTO search_pending")]) == 1
    assert (rows(store, "search_pending"), rows(store, "search_tokens")) == (10, 0)
    # A search moves them first (once), then finds them.
    assert [m.text for m in store.search_messages("word3")] == ["hello word3"]
    assert (rows(store, "search_pending"), rows(store, "search_tokens")) == (0, 10)
    log.clear()
    assert len(store.search_messages("hello")) == 5
    assert not [s for s in log if "search_pending" in s or s == "COMMIT"]  # nothing to move


def test_tokens_move_into_the_index_once_merge_tokens_are_pending(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_sqlite, "MERGE_TOKENS", 6)
    store.add_message(msg(1, "alpha beta"))
    store.add_message(msg(2, "gamma delta"))
    assert (rows(store, "search_pending"), rows(store, "search_tokens")) == (4, 0)
    store.add_message(msg(3, "epsilon zeta"))  # 6 pending: moved in this commit
    assert (rows(store, "search_pending"), rows(store, "search_tokens")) == (0, 6)
    store.add_message(msg(4, "eta alpha"))
    assert [m.message_id for m in store.search_messages("alpha")] == [
        msg(4, "").message_id,
        msg(1, "").message_id,
    ]


def test_deleting_or_editing_a_message_with_pending_tokens_drops_them(store: SqliteStore) -> None:
    store.add_message(msg(1, "kayak trip"))
    store.add_message(msg(2, "kayak repair"))
    assert store.delete_message(msg(1, "").message_id)
    store.replace_message(dataclasses.replace(msg(2, "canoe repair")))
    assert store.search_messages("kayak") == []
    assert [m.text for m in store.search_messages("canoe")] == ["canoe repair"]
    assert store.search_messages("trip") == []


def test_a_rolled_back_transaction_leaves_the_pending_count_right(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_sqlite, "MERGE_TOKENS", 5)
    store.add_message(msg(1, "one two"))
    with pytest.raises(RuntimeError), store.transaction():
        store.add_message(msg(2, "three four"))
        store.add_message(msg(3, "five six"))
        assert store.search_messages("three")  # written and moved in the transaction
        assert (rows(store, "search_pending"), rows(store, "search_tokens")) == (0, 6)
        raise RuntimeError
    assert (rows(store, "search_pending"), rows(store, "search_tokens")) == (2, 0)
    store.add_message(msg(4, "seven eight"))
    store.add_message(msg(5, "nine ten"))  # counted again after the rollback: 6 pending
    assert (rows(store, "search_pending"), rows(store, "search_tokens")) == (0, 6)
    assert store.search_messages("three") == []
    assert [m.text for m in store.search_messages("nine")] == ["nine ten"]


def test_pending_tokens_survive_reopening(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "p")
    store.add_message(msg(1, "persistent words"))
    store.close()
    store = SqliteStore.open(tmp_path / "p")
    assert rows(store, "search_pending") == 2
    assert [m.text for m in store.search_messages("persistent")] == ["persistent words"]
    store.close()


def test_a_schema_2_store_is_migrated(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "p")
    store.add_message(msg(1, "old message about kayaks"))
    assert store.search_messages("kayaks")  # its tokens in search_tokens, as schema 2 had them
    store.close()
    conn = sqlite3.connect(tmp_path / "p" / "vox.db")
    conn.executescript(
        "DROP TABLE search_pending;"
        " UPDATE meta SET value = CAST('2' AS BLOB) WHERE key = 'schema_version';"
    )
    conn.close()
    store = SqliteStore.open(tmp_path / "p")
    store.add_message(msg(2, "new message about kayaks"))
    assert rows(store, "search_pending") == 4
    assert [m.text for m in store.search_messages("kayaks")] == [
        "new message about kayaks",
        "old message about kayaks",
    ]
    store.close()
    conn = sqlite3.connect(tmp_path / "p" / "vox.db")
    assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == b"3"
    conn.close()
