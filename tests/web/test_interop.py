"""A browser user and `vox` (Python) users chat through a real relay, both ways.

The browser client implements the protocol independently (TypeScript, from docs/); these
tests are the proof that it interoperates with the Python SDK: PQXDH sessions in both
directions, ratchet steps, receipts, a tampered ciphertext, a relay that goes away, a
second tab, and a key change that blocks sending until accepted.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.web.support import (
    RelayProc,
    Vox,
    browser_chatting_with_vox,
    open_app,
    open_chat,
    register_in_browser,
    send_in_browser,
    unique,
    wait_message,
)


def has_text(text: str) -> Callable[[list[dict[str, Any]]], bool]:
    """A condition for ``receive_until``: a message with ``text`` arrived."""
    return lambda got: any(m.get("text") == text for m in got)


def test_browser_and_vox_chat_both_ways_with_ratchet_steps_and_receipts(
    context: Any, relay: RelayProc, tmp_path: Path
) -> None:
    alice, bob = unique("webalice"), unique("bob")
    vox = Vox(tmp_path / "bob", relay, bob).register()
    page = open_app(context, relay)
    register_in_browser(page, alice)
    open_chat(page, bob)
    # Browser → Python: the browser starts the PQXDH session.
    first = send_in_browser(page, "hello from the browser")
    got = vox.receive_until(lambda g: any(m.get("text") == "hello from the browser" for m in g))
    assert got[0]["from"] == alice and got[0]["id"] == first
    # Bob's receipts reach the browser (sent → delivered, or read: vox receive marks what it
    # printed read).
    page.wait_for_selector(
        f'[data-testid="message"][data-message-id="{first}"][data-state="delivered"],'
        f' [data-testid="message"][data-message-id="{first}"][data-state="read"]'
    )
    # Several turns: each direction change is a DH ratchet step.
    for i in range(3):
        vox.send(alice, f"python says {i}")
        wait_message(page, bob, f"python says {i}")
        send_in_browser(page, f"browser says {i}")
        vox.receive_until(has_text(f"browser says {i}"))
    # Two in a row from Python (same chain), then the browser answers.
    vox.send(alice, "one")
    vox.send(alice, "two")
    wait_message(page, bob, "two")
    texts = page.locator(f'[data-testid="message"][data-from="{bob}"]').all_inner_texts()
    assert [t.split("\n")[0] for t in texts] == [
        "python says 0",
        "python says 1",
        "python says 2",
        "one",
        "two",
    ]


def test_python_starts_the_session_and_history_survives_a_reload(
    context: Any, relay: RelayProc, tmp_path: Path
) -> None:
    alice, carol = unique("webalice"), unique("carol")
    page = open_app(context, relay)
    register_in_browser(page, alice)
    vox = Vox(tmp_path / "carol", relay, carol).register()
    vox.send(alice, "carol writes first")  # Python runs PQXDH with the browser's prekeys
    page.get_by_test_id(f"chat-item-{carol}").wait_for()
    assert page.get_by_test_id(f"unread-{carol}").inner_text() == "1"
    page.get_by_test_id(f"chat-item-{carol}").click()
    wait_message(page, carol, "carol writes first")
    send_in_browser(page, "browser answers")
    vox.receive_until(lambda g: any(m.get("text") == "browser answers" for m in g))
    page.reload()
    page.get_by_test_id(f"chat-item-{carol}").click()
    wait_message(page, carol, "carol writes first")
    assert page.locator('[data-testid="message"]', has_text="browser answers").count() == 1
    vox.send(alice, "after the reload")  # the session state was stored encrypted
    wait_message(page, carol, "after the reload")


def _tamper_queued_payload_for(relay: RelayProc, username: str) -> None:
    """Flip one bit in the middle of the one payload queued for ``username`` (an attack
    on stored ciphertext)."""
    db = sqlite3.connect(relay.data_dir / "relay.sqlite3", timeout=30)
    try:
        rows = db.execute(
            "SELECT p.envelope_id, p.idx, p.data FROM delivery_payloads p"
            " JOIN delivery_queue q ON q.envelope_id = p.envelope_id AND q.idx = p.idx"
            " JOIN devices d ON d.pk = q.device_pk JOIN accounts a ON a.id = d.account_id"
            " WHERE a.username = ?",
            (username,),
        ).fetchall()
        assert len(rows) == 1, rows
        envelope, idx, data = rows[0]
        flipped = bytearray(data)
        flipped[len(flipped) // 2] ^= 0x40
        db.execute(
            "UPDATE delivery_payloads SET data = ? WHERE envelope_id = ? AND idx = ?",
            (bytes(flipped), envelope, idx),
        )
        db.commit()
    finally:
        db.close()


def test_a_tampered_ciphertext_shows_could_not_decrypt_and_the_conversation_goes_on(
    context: Any, relay: RelayProc, tmp_path: Path
) -> None:
    chat = browser_chatting_with_vox(context, relay, tmp_path, "dave")
    page, vox, alice, dave = chat.page, chat.vox, chat.me, chat.peer
    vox.send(alice, "before")
    wait_message(page, dave, "before")
    page.close()  # offline: the next envelope waits in the relay's queue
    vox.send(alice, "this one is tampered with")
    _tamper_queued_payload_for(relay, alice)
    vox.send(alice, "after")
    page = open_app(context, relay)
    page.get_by_test_id(f"chat-item-{dave}").click()
    wait_message(page, dave, "after")
    notice = page.get_by_test_id("decrypt-failure")
    assert "could not decrypt" in notice.inner_text()
    assert page.locator('[data-testid="message"]', has_text="tampered").count() == 0
    send_in_browser(page, "still talking")
    vox.receive_until(lambda g: any(m.get("text") == "still talking" for m in g))


def test_a_second_tab_is_told_the_app_is_open_in_another_tab(
    context: Any, relay: RelayProc
) -> None:
    page = open_app(context, relay)
    register_in_browser(page, unique("webalice"))
    second = open_app(context, relay)
    second.get_by_test_id("other-tab").wait_for()
    assert "open in another tab" in second.get_by_test_id("other-tab").inner_text()
    # The first tab is undisturbed.
    assert page.get_by_test_id("connection-status").get_attribute("data-status") == "online"


def test_key_change_blocks_sending_until_the_new_safety_number_is_accepted(
    context: Any, relay: RelayProc, tmp_path: Path
) -> None:
    chat = browser_chatting_with_vox(context, relay, tmp_path, "erin")
    page, vox, alice, erin = chat.page, chat.vox, chat.me, chat.peer
    page.get_by_test_id("safety-open").click()
    before = page.get_by_test_id("safety-number").inner_text()
    assert len(before.replace(" ", "")) == 60
    safety_cli = vox.run("verify", alice).stdout
    assert before in safety_cli  # both implementations compute the same 60 digits
    # Erin loses her device; the operator frees the name; she registers again (new key).
    db = sqlite3.connect(relay.data_dir / "relay.sqlite3", timeout=30)
    try:
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("DELETE FROM accounts WHERE username = ?", (erin,))
        db.commit()
    finally:
        db.close()
    vox2 = Vox(tmp_path / "erin-new", relay, erin).register()
    page.reload()
    page.get_by_test_id(f"chat-item-{erin}").click()
    page.get_by_test_id("key-changed").wait_for()
    assert page.get_by_test_id("send").is_disabled()
    after = page.get_by_test_id("safety-number").inner_text()
    assert after != before
    page.get_by_test_id("verify-accept").click()
    page.get_by_test_id("key-changed").wait_for(state="detached")
    send_in_browser(page, "welcome back")
    vox2.receive_until(lambda g: any(m.get("text") == "welcome back" for m in g))


def test_the_relay_going_away_and_back_loses_nothing_and_sends_nothing_twice(
    context: Any, tmp_path: Path
) -> None:
    relay = RelayProc(tmp_path / "own-relay" / "vox-data")
    (tmp_path / "own-relay").mkdir()
    relay.start()
    try:
        alice, frank = unique("webalice"), unique("frank")
        vox = Vox(tmp_path / "frank", relay, frank).register()
        page = open_app(context, relay)
        register_in_browser(page, alice)
        open_chat(page, frank)
        send_in_browser(page, "before the outage")
        relay.stop()
        page.wait_for_selector('[data-testid="connection-status"][data-status="offline"]')
        assert page.get_by_test_id("connection-status").inner_text() == "offline, retrying"
        page.get_by_test_id("composer").fill("written while offline")
        page.get_by_test_id("send").click()
        page.wait_for_selector('[data-testid="message"][data-state="pending"]')
        page.close()  # the queued send survives closing the page (it is in the outbox)
        relay.start()
        page = open_app(context, relay)
        page.get_by_test_id(f"chat-item-{frank}").click()
        page.wait_for_selector('[data-testid="connection-status"][data-status="online"]')
        page.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid=message]')]"
            ".every(m => m.dataset.state !== 'pending')"
        )
        got = vox.receive_until(lambda g: any(m.get("text") == "written while offline" for m in g))
        time.sleep(2)
        got += vox.receive(wait=3)
        texts = [m.get("text") for m in got]
        assert texts.count("written while offline") == 1
        assert texts.count("before the outage") == 1
    finally:
        relay.stop()
