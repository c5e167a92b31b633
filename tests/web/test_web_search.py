"""Searching the browser's message history (clients/web/src/core/search.ts): every word of
the query, whole words in any case, newest first, across conversations; a file is found by
its name or caption, a message deleted for everyone is not; opening a result shows the
message in its conversation. The same rules as ``vox search`` (clients/store/search.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.web.support import (
    RelayProc,
    Vox,
    open_app,
    open_chat,
    register_in_browser,
    send_in_browser,
    unique,
    wait_message,
)


def results(page: Any, query: str) -> list[tuple[str, str]]:
    """(conversation, text) of each result shown for ``query``, in order."""
    page.get_by_test_id("search-input").fill(query)
    page.wait_for_selector('[data-testid="search-results"], [data-testid="search-empty"]')
    rows = page.locator('[data-testid="search-result"]')
    return [
        (str(rows.nth(i).get_attribute("data-conv")), rows.nth(i).locator(".snippet").inner_text())
        for i in range(rows.count())
    ]


def test_search_finds_every_word_newest_first_and_opens_the_message(
    context: Any, relay: RelayProc, tmp_path: Path
) -> None:
    alice, bob, carol = unique("alice"), unique("bob"), unique("carol")
    vbob = Vox(tmp_path / "bob", relay, bob).register()
    vcarol = Vox(tmp_path / "carol", relay, carol).register()
    page = open_app(context, relay)
    register_in_browser(page, alice)
    open_chat(page, bob)
    send_in_browser(page, "hello bob")
    lunch = vbob.send(alice, "Lunch at NOON tomorrow?")
    wait_message(page, bob, "Lunch at NOON")
    gone = vbob.send(alice, "noon is a secret word")
    wait_message(page, bob, "secret word")
    report = tmp_path / "quarterly-report.txt"
    report.write_text("numbers")
    vbob.run("send-file", alice, str(report), "--caption", "the figures")
    page.locator('[data-testid="attachment"]').first.wait_for()
    vcarol.send(alice, "Die Straße ist zu")
    open_chat(page, carol)
    wait_message(page, carol, "Straße")
    open_chat(page, bob)
    send_in_browser(page, "noon works")

    # Every word, any case; newest first, across conversations.
    assert results(page, "noon") == [
        (bob, "noon works"),
        (bob, "noon is a secret word"),
        (bob, "Lunch at NOON tomorrow?"),
    ]
    assert results(page, "lunch   noon") == [(bob, "Lunch at NOON tomorrow?")]
    # Whole words only, and nothing for a query without words.
    assert results(page, "lunc") == []
    assert page.get_by_test_id("search-empty").is_visible()
    assert results(page, "?!") == []
    # A file by its name or its caption; case folding as str.casefold (ß = ss).
    assert results(page, "QUARTERLY report") == [(bob, "the figures · quarterly-report.txt")]
    assert results(page, "figures") == [(bob, "the figures · quarterly-report.txt")]
    assert results(page, "strasse") == [(carol, "Die Straße ist zu")]

    # Deleted for everyone: no longer found.
    vbob.run("delete", alice, gone)
    page.locator(f'[data-message-id="{gone}"] [data-testid="tombstone"]').wait_for()
    assert results(page, "secret") == []

    # Opening a result shows its conversation with the message marked; Escape clears.
    open_chat(page, carol)
    results(page, "tomorrow")
    page.locator(f'[data-testid="search-result"][data-message-id="{lunch}"]').click()
    page.get_by_test_id("conversation-title").filter(has_text=bob).wait_for()
    page.locator(f'[data-message-id="{lunch}"][data-highlighted="true"]').wait_for()
    page.get_by_test_id("search-input").press("Escape")
    page.get_by_test_id(f"chat-item-{carol}").wait_for()
