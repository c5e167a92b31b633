"""The browser store's passphrase, changed after registration (Devices → Change passphrase…):
the current one is required, every record is re-sealed under the new key in one transaction
(the history stays readable), and it can be removed or set again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.web.support import (
    RelayProc,
    Vox,
    kit_call,
    kit_page,
    open_app,
    unique,
    wait_message,
    wait_online,
)


def change(page: Any, current: str | None, new: str, again: str | None = None) -> tuple[bool, str]:
    """Fill the passphrase form and submit it; (ok, what it says)."""
    page.get_by_test_id("devices-open").click()
    page.get_by_test_id("passphrase-open").click()
    if current is not None:
        page.get_by_test_id("passphrase-current").fill(current)
    if new:
        page.get_by_test_id("passphrase-new").fill(new)
        page.get_by_test_id("passphrase-again").fill(new if again is None else again)
        page.get_by_test_id("passphrase-submit").click()
    else:
        page.get_by_test_id("passphrase-remove").click()
    status = page.get_by_test_id("passphrase-status")
    status.wait_for()
    result = (status.get_attribute("data-ok") == "true", status.inner_text())
    page.get_by_test_id("devices-open").click()  # closes the panel
    return result


def reopen(page: Any, passphrase: str | None, bob: str) -> None:
    """Reload; unlock with ``passphrase`` (None: no unlock asked); bob's message is readable."""
    page.reload()
    if passphrase is not None:
        page.get_by_test_id("unlock-passphrase").fill(passphrase)
        page.get_by_test_id("unlock-submit").click()
    wait_online(page)
    page.get_by_test_id(f"chat-item-{bob}").click()
    wait_message(page, bob, "kept through every change")


def test_the_passphrase_is_changed_removed_and_set_again_and_the_history_stays(
    context: Any, relay: RelayProc, tmp_path: Path
) -> None:
    alice, bob = unique("alice"), unique("bob")
    vbob = Vox(tmp_path / "bob", relay, bob).register()
    page = open_app(context, relay)
    page.get_by_test_id("register-username").fill(alice)
    page.get_by_test_id("store-passphrase").fill("first one")
    page.get_by_test_id("register-submit").click()
    wait_online(page)
    vbob.send(alice, "kept through every change")
    page.get_by_test_id(f"chat-item-{bob}").click()
    wait_message(page, bob, "kept through every change")

    # The current passphrase is required, and the new one typed twice alike.
    assert change(page, "not it", "second one") == (False, "not changed: wrong passphrase")
    assert change(page, "first one", "second one", "second on") == (
        False,
        "the two new passphrases differ",
    )
    assert change(page, "first one", "second one") == (True, "passphrase changed")
    page.reload()
    page.get_by_test_id("unlock-passphrase").fill("first one")
    page.get_by_test_id("unlock-submit").click()
    page.get_by_text("wrong passphrase").wait_for()
    page.get_by_test_id("unlock-passphrase").fill("second one")
    page.get_by_test_id("unlock-submit").click()
    wait_online(page)
    page.get_by_test_id(f"chat-item-{bob}").click()
    wait_message(page, bob, "kept through every change")

    # Removed: the app opens without asking; set again: it asks for the new one.
    ok, said = change(page, "second one", "")
    assert ok, said
    reopen(page, None, bob)
    assert change(page, None, "third one") == (True, "passphrase changed")
    reopen(page, "third one", bob)


def test_a_commit_and_a_read_started_during_a_change_wait_for_it(browser: Any) -> None:
    """A record committed while the records are re-sealed would be sealed under the old key
    (and unreadable once the change ends): it waits for the change, as a read does."""
    with kit_page(browser) as page:
        got = kit_call(page, "storeRekeyRace", unique("rekey"))
    assert got == {
        "readDuring": 7,
        "mode": "passphrase",
        "records": [*range(50), -1],
        "old": "LockedError: wrong passphrase",
    }
