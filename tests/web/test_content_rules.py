"""The browser client's rules for message operations (clients/web/src/core/messageops.ts),
run in Chromium over an in-memory host with an injected clock: the same rules as the Python
SDK's clients/sdk/message_rules.py (docs/protocol-client.md §2 "Operations"), so every device
converges. The interop with `vox` through a real relay is tests/web/test_content_interop.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.web.support import kit_call, kit_page

A = "aa" * 16  # bob's text
B = "bb" * 16  # bob's file
C = "cc" * 16  # my text
G = "a0" * 16  # a group id
HOUR = 3600
DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def kit(browser: Any) -> Iterator[Any]:
    with kit_page(browser) as page:
        yield page


def play(kit: Any, *steps: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = kit_call(kit, "opsScenario", list(steps))
    result["by_id"] = {m["id"]: m for m in result["messages"]}
    return result


def msg(conv: str, sender: str, mid: str, text: str = "hello", **more: Any) -> dict[str, Any]:
    return {"kind": "message", "conv": conv, "from": sender, "id": mid, "text": text, **more}


def op(conv: str, sender: str, kind: str, target: str = A, **more: Any) -> dict[str, Any]:
    return {"kind": "op", "conv": conv, "from": sender, "type": kind, "target": target, **more}


def test_only_the_author_edits_and_the_earlier_texts_are_kept(kit: Any) -> None:
    got = play(
        kit,
        msg("bob", "bob", A, "first"),
        op("bob", "bob", "edit", text="second"),
        op("bob", "me", "edit", text="not mine to edit"),
        op("bob", "bob", "edit", text="third"),
    )["by_id"][A]
    assert got["text"] == "third"
    assert got["edits"] == ["first", "second"]


def test_a_file_or_a_deleted_message_is_not_edited(kit: Any) -> None:
    got = play(
        kit,
        msg("bob", "bob", A, "text"),
        msg("bob", "bob", B, file=True),
        op("bob", "bob", "edit", target=B, text="a file has no text"),
        op("bob", "bob", "delete"),
        op("bob", "bob", "edit", text="too late"),
    )["by_id"]
    assert got[B]["text"] is None and got[B]["edits"] == []
    assert got[A]["deleted"] and got[A]["text"] is None and got[A]["edits"] == []


def test_delete_for_everyone_is_the_authors_and_leaves_a_tombstone(kit: Any) -> None:
    got = play(
        kit,
        msg("bob", "bob", A, "bob's"),
        msg("bob", "bob", B, file=True),
        msg("bob", "me", C, "mine"),
        op("bob", "me", "delete", target=A),  # not my message: ignored
        op("bob", "bob", "reaction", target=B, emoji="👍"),
        op("bob", "bob", "delete", target=B),
        op("bob", "me", "delete", target=C),
    )["by_id"]
    assert not got[A]["deleted"] and got[A]["text"] == "bob's"
    assert got[B]["deleted"] and not got[B]["file"] and got[B]["reactions"] == {}
    assert got[C]["deleted"] and got[C]["text"] is None


def test_reactions_are_one_per_person_replaced_and_removed(kit: Any) -> None:
    got = play(
        kit,
        msg("group:" + G, "bob", A),
        op("group:" + G, "bob", "reaction", emoji="👍"),
        op("group:" + G, "carol", "reaction", emoji="👍"),
        op("group:" + G, "me", "reaction", emoji="❤️"),
        op("group:" + G, "carol", "reaction", emoji="😂"),  # replaces carol's 👍
        op("group:" + G, "bob", "reaction", emoji=""),  # removes bob's
    )["by_id"][A]
    assert got["reactions"] == {"carol": "😂", "me": "❤️"}
    gone = play(
        kit,
        msg("bob", "bob", A),
        op("bob", "bob", "delete"),
        op("bob", "me", "reaction", emoji="👍"),  # a deleted message takes none
    )["by_id"][A]
    assert gone["reactions"] == {}


def test_an_operation_applies_only_in_its_own_conversation(kit: Any) -> None:
    got = play(
        kit,
        msg("bob", "bob", A, "direct"),
        op("group:" + G, "bob", "edit", text="through a group"),
        op("carol", "carol", "reaction", emoji="👍"),
    )["by_id"][A]
    assert got["text"] == "direct" and got["edits"] == [] and got["reactions"] == {}


def test_operations_that_arrive_first_wait_for_their_message(kit: Any) -> None:
    got = play(
        kit,
        op("bob", "bob", "edit", text="edited before it arrived", now=5),
        op("bob", "carol", "reaction", emoji="👍", now=6),
        msg("bob", "bob", A, "original", now=10),
    )["by_id"][A]
    assert got["text"] == "edited before it arrived"
    assert got["edits"] == ["original"]
    assert got["reactions"] == {"carol": "👍"}


def test_waiting_operations_are_bounded_in_number_and_age(kit: Any) -> None:
    targets = [f"{i:032x}" for i in range(1001)]
    steps = [op("bob", "bob", "reaction", target=t, emoji="👍", now=1) for t in targets]
    steps += [msg("bob", "bob", targets[0]), msg("bob", "bob", targets[-1])]
    got = play(kit, *steps)["by_id"]
    assert got[targets[0]]["reactions"] == {}  # the oldest of 1001 was dropped (1000 kept)
    assert got[targets[-1]]["reactions"] == {"bob": "👍"}
    week = 7 * DAY_MS
    aged = play(
        kit,
        op("bob", "bob", "reaction", target=A, emoji="👍", now=1),
        op("bob", "bob", "reaction", target=B, emoji="👍", now=week + 2),  # prunes the first
        msg("bob", "bob", A),
        msg("bob", "bob", B),
    )["by_id"]
    assert aged[A]["reactions"] == {} and aged[B]["reactions"] == {"bob": "👍"}


def test_the_timer_is_set_by_any_member_and_announced(kit: Any) -> None:
    got = play(
        kit,
        op("group:" + G, "bob", "timer", seconds=HOUR),
        op("group:" + G, "carol", "timer", seconds=0),
        op("bob", "me", "timer", seconds=30),
    )
    assert got["timers"] == {"group:" + G: 0, "bob": 30}
    events = [(m["conv"], m["text"]) for m in got["messages"] if m["event"] == "timer"]
    assert events == [
        ("group:" + G, "bob set disappearing messages to 1 hour"),
        ("group:" + G, "carol turned off disappearing messages"),
        ("bob", "You set disappearing messages to 30 seconds"),
    ]


def test_disappearing_messages_go_that_long_after_read_or_sent(kit: Any) -> None:
    got = play(
        kit,
        msg("bob", "bob", A, "theirs", sentAt=1_000, expire=30),
        msg("bob", "me", C, "ours", sentAt=2_000, expire=30),
        msg("bob", "bob", B, "no timer", sentAt=3_000),
        {"kind": "sweep", "now": 31_999},  # ours: sent at 2 s + 30 s, not yet
        {"kind": "read", "conv": "bob", "now": 60_000},  # theirs: read at 60 s
        {"kind": "sweep", "now": 32_000},  # ours goes
        {"kind": "sweep", "now": 89_999},
        {"kind": "sweep", "now": 90_000},  # theirs goes 30 s after it was read
    )
    assert got["swept"] == [0, 1, 0, 1]
    assert [m["id"] for m in got["messages"]] == [B]


T1, T2 = "e1" * 16, "e2" * 16  # two timer changes


def test_a_timer_change_that_comes_again_changes_nothing(kit: Any) -> None:
    # A repeat of an older change (a resend under a new client id, a transcript) used to set
    # the timer back to it; a row deleted for me came back with it (and could not be deleted).
    older = op("bob", "bob", "timer", id=T1, seconds=HOUR, now=5_000)
    newer = op("bob", "bob", "timer", id=T2, seconds=60, now=6_000)
    shown = play(kit, older, newer, older)
    assert shown["timers"] == {"bob": 60}
    assert [m["id"] for m in shown["messages"]] == [T1, T2]
    forgotten = play(kit, older, newer, {"kind": "forget", "conv": "bob", "id": T1}, older)
    assert forgotten["timers"] == {"bob": 60}
    assert [m["id"] for m in forgotten["messages"]] == [T2]


def test_deleting_a_row_for_me_drops_the_operations_kept_for_it(kit: Any) -> None:
    # An operation kept for an id that then arrives as a timer change (stored without applying
    # what was kept for it); the row deleted for me takes it along; others stay.
    got = play(
        kit,
        op("bob", "bob", "reaction", target=T1, emoji="👍", now=1),
        op("bob", "bob", "reaction", target=A, emoji="👍", now=1),
        op("bob", "bob", "timer", id=T1, seconds=HOUR, now=2),
        {"kind": "forget", "conv": "bob", "id": T1},
    )
    assert got["kept"] == [A]
    assert got["messages"] == []
