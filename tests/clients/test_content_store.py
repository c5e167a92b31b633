"""The store side of edits, tombstones, reactions, replies, disappearing messages and search:
the same contract for the memory and the SQLite store; the SQLite search index is keyed (no
words in the file), survives a passphrase change, and a schema-1 store is migrated."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.store import DeliveryState, Direction, MemoryStore, SqliteStore, StoredMessage
from clients.store.base import Store


def msg(i: int, text: str | None, conversation: str = "bob", **extra: object) -> StoredMessage:
    return StoredMessage(f"{i:032x}", conversation, Direction.IN, conversation, 1,
                         float(i), float(i), text, **extra)  # type: ignore[arg-type]  # fmt: skip


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
        return
    s = SqliteStore.open(tmp_path / "p")
    yield s
    s.close()


def test_replace_keeps_edits_tombstone_reactions_reply(store: Store) -> None:
    store.add_message(msg(1, "helo", reply=("ab" * 16, "alice", "hi")))
    stored = store.get_message(f"{1:032x}")
    assert stored is not None
    changed = dataclasses.replace(
        stored, text="hello", edits=("helo",), reactions=(("alice", "👍"),), expires_in=60
    )
    assert store.replace_message(changed)
    assert store.get_message(changed.message_id) == changed
    assert not store.replace_message(msg(9, "absent"))
    tomb = dataclasses.replace(changed, text=None, deleted=True, edits=(), reactions=())
    store.replace_message(tomb)
    assert store.get_message(tomb.message_id) == tomb
    assert store.delete_message(tomb.message_id) and store.get_message(tomb.message_id) is None
    assert not store.delete_message(tomb.message_id)


def test_expiry_starts_on_read_and_expired_lists_due(store: Store) -> None:
    store.add_message(msg(1, "a", expires_in=30))
    store.add_message(msg(2, "b"))
    store.add_message(msg(3, "c", expire_at=50.0))
    assert [m.message_id for m in store.expired_messages(60.0)] == [f"{3:032x}"]
    store.mark_conversation_read("bob", now=100.0)
    assert store.get_message(f"{1:032x}").expire_at == 130.0  # type: ignore[union-attr]
    assert store.get_message(f"{2:032x}").expire_at is None  # type: ignore[union-attr]
    assert {m.message_id for m in store.expired_messages(130.0)} == {f"{1:032x}", f"{3:032x}"}


def test_search_whole_words_all_of_them_newest_first(store: Store) -> None:
    store.add_message(msg(1, "Lunch at noon?"))
    store.add_message(msg(2, "no lunch today", conversation="carol"))
    store.add_message(msg(3, "LUNCH!"))
    store.add_message(msg(4, "lunch", deleted=True))
    store.add_message(msg(5, None, attachment={"file_name": "lunch-menu.pdf", "caption": ""}))
    ids = [m.message_id[-1] for m in store.search_messages("lunch")]
    assert ids == ["5", "3", "2", "1"]  # newest first, the deleted one left out
    assert [m.text for m in store.search_messages("lunch noon")] == ["Lunch at noon?"]
    assert [m.text for m in store.search_messages("lunch", conversation="carol")] == [
        "no lunch today"
    ]
    assert store.search_messages("lun") == []  # whole words
    assert store.search_messages("") == []
    edited = dataclasses.replace(msg(1, "dinner at eight"), edits=("Lunch at noon?",))
    store.replace_message(edited)
    assert [m.text for m in store.search_messages("dinner")] == ["dinner at eight"]
    assert "1" not in [m.message_id[-1] for m in store.search_messages("noon")]


def test_the_index_holds_no_words_and_follows_a_key_change(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "p")
    store.add_message(msg(1, "zanzibar expedition"))
    store.close()
    raw = (tmp_path / "p" / "vox.db").read_bytes()
    assert b"zanzibar" not in raw
    store = SqliteStore.open(tmp_path / "p")
    store.change_passphrase("correct horse")
    assert [m.text for m in store.search_messages("zanzibar")] == ["zanzibar expedition"]
    store.close()


def test_a_schema_1_store_is_migrated(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "p")
    store.add_message(msg(1, "old message about kayaks"))
    store.close()
    conn = sqlite3.connect(tmp_path / "p" / "vox.db")
    conn.executescript(
        "DROP TABLE search_tokens; DROP TABLE search_pending; DROP INDEX messages_by_expiry;"
        " ALTER TABLE messages DROP COLUMN expire_at; ALTER TABLE messages DROP COLUMN expires_in;"
        " UPDATE meta SET value = CAST('1' AS BLOB) WHERE key = 'schema_version';"
    )
    conn.close()
    store = SqliteStore.open(tmp_path / "p")
    assert [m.text for m in store.search_messages("kayaks")] == ["old message about kayaks"]
    assert store.get_message(f"{1:032x}").expires_in == 0  # type: ignore[union-attr]
    store.close()
    conn = sqlite3.connect(tmp_path / "p" / "vox.db")
    assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == b"3"
    conn.close()


def test_a_timer_notice_row_round_trips_and_is_never_unread(store: Store) -> None:
    notice = msg(7, None, timer=3600, state=DeliveryState.READ)
    assert store.add_message(notice)
    assert store.get_message(notice.message_id) == notice
    assert store.history("bob")[-1].timer == 3600
    assert [c.unread for c in store.conversations()] == [0]
    assert store.mark_conversation_read("bob", now=1.0) == []
    assert store.search_messages("3600") == []
