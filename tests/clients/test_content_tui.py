"""The conversation view shows replies, edits, tombstones, reactions and the timer mark."""

from __future__ import annotations

from clients.sdk.models import Message, ReplyRef
from clients.tui.render import render_message


def test_a_reply_edited_with_reactions() -> None:
    message = Message("a" * 32, "bob", "bob", 1, 0, 0, text="yes", edited=True,
                      reactions=(("alice", "👍"), ("carol", "👍"), ("dave", "🎉")),
                      reply_to=ReplyRef("b" * 32, "alice", "lunch at noon?"))  # fmt: skip
    plain = render_message(message).plain
    assert "↪ alice: lunch at noon? yes (edited)" in plain
    assert plain.endswith("👍2 🎉")


def test_a_tombstone_and_a_disappearing_message() -> None:
    gone = render_message(Message("a" * 32, "bob", "bob", 1, 0, 0, deleted=True)).plain
    assert gone.endswith("🗑 this message was deleted")
    timed = render_message(Message("a" * 32, "bob", "bob", 1, 0, 0, text="hi", expires_in=30))
    assert timed.plain.endswith("hi ⏱")
