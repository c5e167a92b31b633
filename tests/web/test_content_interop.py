"""Edits, deletes, replies, reactions and disappearing messages between a browser user and
`vox` (Python SDK) users through a real relay, both ways, in a direct chat and in a group
(with a second browser for group typing and read receipts).

The rules themselves (author only, one reaction per person, operations that arrive before
their message, the expiry clock) are tested with an injected clock in test_content_rules.py.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.web.support import (
    RelayProc,
    Vox,
    act,
    browser_chatting_with_vox,
    message,
    open_app,
    register_in_browser,
    send_in_browser,
    unique,
    wait_message,
)

Events = list[dict[str, Any]]


def relay_lifetime_ms(relay: RelayProc, client_id: str) -> int:
    """How long the relay keeps the (undelivered) envelope of a send: ``expires_at - ts``."""
    db = sqlite3.connect(relay.data_dir / "relay.sqlite3", timeout=30)
    try:
        rows = db.execute(
            "SELECT expires_at - created_at FROM delivery_sends WHERE client_id = ?", (client_id,)
        ).fetchall()
    finally:
        db.close()
    assert len(rows) == 1, rows
    return int(rows[0][0])


def update(kind: str, **fields: Any) -> Callable[[Events], bool]:
    """A predicate for ``Vox.receive_until``: an event of ``kind`` with these fields."""
    return lambda got: any(
        e.get("kind") == kind and all(e.get(k) == v for k, v in fields.items()) for e in got
    )


def test_edits_deletes_replies_and_reactions_travel_both_ways_with_vox(
    context: Any, relay: RelayProc, tmp_path: Path
) -> None:
    chat = browser_chatting_with_vox(context, relay, tmp_path, "bob")
    page, vox, alice, bob = chat.page, chat.vox, chat.me, chat.peer
    first = chat.first

    # vox → browser: a reply quoting the browser's message (a click jumps to it) ...
    reply = vox.run("send", alice, "yes, hi", "--reply-to", first).stdout.strip()
    quote = message(page, reply).get_by_test_id("reply-quote")
    quote.wait_for()
    assert quote.get_attribute("data-quote-id") == first
    assert alice in quote.inner_text() and f"hi {bob}" in quote.inner_text()
    quote.click()
    page.wait_for_selector(
        f'[data-message-id="{first}"][data-highlighted="true"]', state="attached"
    )
    # ... a reaction, an edit (the earlier text kept) and a delete for everyone.
    vox.run("react", alice, first, "👍")
    message(page, first).locator(
        '[data-testid="reaction"][data-emoji="👍"][data-count="1"]'
    ).wait_for()
    vox.run("edit", alice, reply, "yes, hello")
    message(page, reply).get_by_test_id("edited").wait_for()
    assert "yes, hello" in message(page, reply).inner_text()
    message(page, reply).get_by_test_id("edited").click()
    assert message(page, reply).get_by_test_id("edit-history").inner_text() == "yes, hi"
    oops = vox.send(alice, "oops")
    wait_message(page, bob, "oops")
    # Arriving while the chat is open, it is read at once: vox gets the READ receipt.
    vox.receive_until(
        lambda got: any(
            e.get("kind") == "receipt" and e.get("state") == "read" and oops in e["message_ids"]
            for e in got
        )
    )
    vox.run("delete", alice, oops)
    message(page, oops).get_by_test_id("tombstone").wait_for()
    assert "oops" not in message(page, oops).inner_text()

    # browser → vox: a reaction, replaced, then removed (one per person).
    act(page, reply, "react-option", "❤️")
    vox.receive_until(update("reaction", target=reply, emoji="❤️", **{"from": alice}))
    act(page, reply, "react-option", "😂")
    vox.receive_until(update("reaction", target=reply, emoji="😂"))
    assert message(page, reply).get_by_test_id("reaction").count() == 1
    message(page, reply).locator('[data-testid="reaction"][data-emoji="😂"]').click()
    vox.receive_until(update("reaction", target=reply, removed=True))
    message(page, reply).get_by_test_id("reactions").wait_for(state="detached")
    # An edit of the browser's own message.
    act(page, first, "action-edit")
    page.get_by_test_id("edit-banner").wait_for()
    page.get_by_test_id("composer").fill(f"hi {bob}, edited")
    page.get_by_test_id("send").click()
    vox.receive_until(update("edit", target=first, text=f"hi {bob}, edited"))
    message(page, first).get_by_test_id("edited").wait_for()
    # A reply from the browser: vox sees the quote (id, author, excerpt).
    act(page, reply, "action-reply")
    assert "yes, hello" in page.get_by_test_id("reply-preview").inner_text()
    answer = send_in_browser(page, "a reply from the browser")
    got = vox.receive_until(update("reply", id=answer))
    assert next(e for e in got if e.get("id") == answer)["reply_to"] == {
        "id": reply,
        "author": bob,
        "excerpt": "yes, hello",
    }
    # Delete for everyone (the browser's own message) and delete for me (bob's).
    act(page, first, "action-delete-everyone")
    vox.receive_until(update("delete", target=first))
    message(page, first).get_by_test_id("tombstone").wait_for()
    act(page, reply, "action-delete-me")
    message(page, reply).wait_for(state="detached")
    history = {m["id"]: m for m in _history(vox, alice)}
    assert history[first]["deleted"] is True
    assert history[reply]["text"] == "yes, hello"  # "for me" stays on this device
    assert "reactions" not in history[reply]  # alice's reaction was removed
    # Everything above is in the store: a reload shows the same.
    page.reload()
    page.get_by_test_id(f"chat-item-{bob}").click()
    message(page, answer).get_by_test_id("reply-quote").wait_for()
    assert message(page, reply).count() == 0
    assert message(page, first).get_by_test_id("tombstone").count() == 1
    assert message(page, oops).get_by_test_id("tombstone").count() == 1
    # On a phone-sized screen the actions and the quote fit the width (nothing off-screen).
    page.set_viewport_size({"width": 360, "height": 740})
    message(page, answer).get_by_test_id("message-actions").click()
    controls = message(page, answer).locator(
        '[data-testid="message-actions-panel"] button, [data-testid="reply-quote"]'
    )
    assert controls.count() >= 9  # six reactions, reply, delete for everyone, delete for me
    for i in range(controls.count()):
        box = controls.nth(i).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 360, box


def _history(vox: Vox, target: str) -> Events:
    out = vox.run("history", target, "--json").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_a_disappearing_timer_set_on_either_side_is_announced_and_its_messages_disappear(
    context: Any, relay: RelayProc, tmp_path: Path
) -> None:
    chat = browser_chatting_with_vox(context, relay, tmp_path, "carol")
    page, vox, alice, carol = chat.page, chat.vox, chat.me, chat.peer
    # vox sets the shortest timer: announced in the browser, which follows it.
    vox.run("disappear", alice, "30s")
    page.get_by_test_id("timer-event").filter(
        has_text=f"{carol} set disappearing messages to 30 seconds"
    ).wait_for()
    assert page.get_by_test_id("timer-select").get_attribute("data-timer") == "30"
    theirs = vox.send(alice, "self-destructing")
    wait_message(page, carol, "self-destructing")
    assert message(page, theirs).get_by_test_id("expires").count() == 1
    ours = send_in_browser(page, "mine disappears too")
    assert relay_lifetime_ms(relay, ours) == 30_000  # the relay's copy is capped at the timer
    got = vox.receive_until(update("text", id=ours))
    assert next(e for e in got if e.get("id") == ours)["expires_in"] == 30
    # ~30 s after it was read here (the chat is open) / sent, each leaves page and store.
    for mid in (theirs, ours):
        message(page, mid).wait_for(state="detached", timeout=120_000)
    page.reload()
    page.get_by_test_id(f"chat-item-{carol}").click()
    page.get_by_test_id("timer-event").first.wait_for()
    assert page.locator(f'[data-message-id="{theirs}"], [data-message-id="{ours}"]').count() == 0
    # The browser changes it (5 minutes, then off): vox follows both.
    page.get_by_test_id("timer-select").select_option("300")
    vox.receive_until(update("timer", seconds=300, **{"from": alice}))
    page.get_by_test_id("timer-event").filter(
        has_text="You set disappearing messages to 5 minutes"
    ).wait_for()
    page.get_by_test_id("timer-select").select_option("0")
    vox.receive_until(update("timer", seconds=0, **{"from": alice}))
    after = send_in_browser(page, "kept for good")
    got = vox.receive_until(update("text", id=after))
    assert "expires_in" not in next(e for e in got if e.get("id") == after)
    assert message(page, after).get_by_test_id("expires").count() == 0
    # A change's row deleted for me goes from here only, for good; the timer stands (the old
    # bundle offered no delete on such a row, and its delete for me refused one).
    first = page.get_by_test_id("timer-event").first
    row = f'[data-testid="timer-event"][data-message-id="{first.get_attribute("data-message-id")}"]'
    first.get_by_test_id("action-delete-me").click()
    page.locator(row).wait_for(state="detached")
    page.reload()
    page.get_by_test_id(f"chat-item-{carol}").click()
    message(page, after).wait_for()
    assert page.locator(row).count() == 0
    assert page.get_by_test_id("timer-event").count() == 2  # the browser's two changes
    assert page.get_by_test_id("timer-select").get_attribute("data-timer") == "0"


def test_group_operations_typing_and_receipts_with_a_vox_member_and_a_second_browser(
    browser: Any, relay: RelayProc, tmp_path: Path
) -> None:
    alice, dave, bob = unique("alice"), unique("dave"), unique("bob")
    vbob = Vox(tmp_path / "bob", relay, bob).register()
    ctx_a, ctx_d = browser.new_context(), browser.new_context()
    try:
        for ctx in (ctx_a, ctx_d):
            ctx.set_default_timeout(60_000)
        pa, pd = open_app(ctx_a, relay), open_app(ctx_d, relay)
        register_in_browser(pa, alice)
        register_in_browser(pd, dave)
        name = f"ops{unique('')}"
        pa.get_by_test_id("group-name").fill(name)
        pa.get_by_test_id("group-members").fill(f"{bob}, {dave}")
        pa.get_by_test_id("group-create").click()
        pa.get_by_test_id(f"group-member-{dave}").wait_for()
        hello = send_in_browser(pa, "group hello")
        got = vbob.receive_until(update("text", id=hello))
        group = f"group:{next(e for e in got if e.get('id') == hello)['group']}"
        # Receipts per member: delivered to bob's vox and dave's browser; read by dave when
        # he opens the group (and by bob if his vox marks what it printed read).
        receipts = f'[data-message-id="{hello}"] [data-testid="group-receipts"]'
        pa.wait_for_selector(f'{receipts}[data-delivered="2"]')
        assert dave not in str(pa.locator(receipts).get_attribute("data-read-by"))
        pd.get_by_test_id(f"group-item-{name}").click()
        wait_message(pd, alice, "group hello")
        pa.wait_for_selector(f'{receipts}[data-read-by*="{dave}"]')
        read = int(pa.locator(receipts).get_attribute("data-read") or 0)
        assert pa.locator(receipts).inner_text() == f"read by {read}/2"
        # Typing in a group: dave's indicator names him on alice's screen.
        pd.get_by_test_id("composer").press_sequentially("typing in the group", delay=40)
        pa.locator(f'[data-testid="typing"][data-users="{dave}"]').wait_for()
        assert pa.get_by_test_id("typing").inner_text() == f"{dave} is typing…"
        pd.get_by_test_id("composer").fill("")
        # vox → group: a reaction and an edit of bob's own message, seen by both browsers.
        mine = vbob.run("send", group, "bob in the group").stdout.strip()
        vbob.run("react", group, hello, "🎉")
        vbob.run("edit", group, mine, "bob in the group, edited")
        for page in (pa, pd):
            message(page, hello).locator('[data-testid="reaction"][data-emoji="🎉"]').wait_for()
            message(page, mine).get_by_test_id("edited").wait_for()
            assert "bob in the group, edited" in message(page, mine).inner_text()
        # browser → group: dave reacts, alice deletes her message for everyone, dave sets
        # a timer; bob and the other browser follow.
        act(pd, mine, "react-option", "👍")
        vbob.receive_until(update("reaction", target=mine, emoji="👍", **{"from": dave}))
        message(pa, mine).locator('[data-testid="reaction"][data-emoji="👍"]').wait_for()
        act(pa, hello, "action-delete-everyone")
        vbob.receive_until(update("delete", target=hello, conversation=group))
        message(pd, hello).get_by_test_id("tombstone").wait_for()
        pd.get_by_test_id("timer-select").select_option("3600")
        vbob.receive_until(update("timer", seconds=3600, conversation=group))
        pa.get_by_test_id("timer-event").filter(
            has_text=f"{dave} set disappearing messages to 1 hour"
        ).wait_for()
        later = send_in_browser(pa, "under the group timer")
        assert relay_lifetime_ms(relay, later) == 3_600_000
        got = vbob.receive_until(update("text", id=later))
        assert next(e for e in got if e.get("id") == later)["expires_in"] == 3600
    finally:
        ctx_a.close()
        ctx_d.close()
