"""Verification synced between an account's devices (the VERIFIED content, 0x0D,
docs/protocol-client.md §2): a browser and a `vox` CLI device of the same account, through a
real relay. Accepting a contact's key on one device marks it verified on the other — at once
when that device holds the same key, or when it first fetches the contact's list under
exactly that key.
"""

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


def safety(page: Any, user: str) -> Any:
    """Open ``user``'s chat and its safety panel."""
    open_chat(page, user)
    if not page.get_by_test_id("safety-panel").is_visible():  # it stays open across chats
        page.get_by_test_id("safety-open").click()
    return page.get_by_test_id("safety-panel")


def test_a_key_accepted_on_one_device_is_verified_on_the_other(
    context: Any, relay: RelayProc, tmp_path: Path
) -> None:
    alice, carol, dave, erin = (unique(p) for p in ("alice", "carol", "dave", "erin"))
    for user in (carol, dave, erin):
        Vox(tmp_path / user, relay, user).register()
    page = open_app(context, relay)
    register_in_browser(page, alice)
    # A second device of alice's account: the vox CLI joins with the browser's code.
    page.get_by_test_id("devices-open").click()
    page.get_by_test_id("link-new-device").click()
    code = page.get_by_test_id("link-new-code").inner_text()
    laptop = Vox(tmp_path / "alice-laptop", relay, alice)
    laptop.run("join", code, "--server", relay.url)
    page.get_by_test_id("link-new-status").filter(has_text="linked device").wait_for()
    page.get_by_test_id("devices-open").click()

    # Both devices know carol; the laptop accepts her key: the browser shows her verified.
    send_in_browser_to(page, carol, "hello carol")
    laptop.run("send", carol, "hello from the laptop")
    panel = safety(page, carol)
    assert panel.get_attribute("data-verified") == "false"
    laptop.run("verify", carol, "--accept")
    page.wait_for_selector('[data-testid="safety-panel"][data-verified="true"]')

    # The browser accepts dave's key: the laptop's `vox verify` says verified.
    laptop.run("send", dave, "hello dave")
    send_in_browser_to(page, dave, "hello dave from the browser")
    safety(page, dave).get_by_test_id("verify-accept").click()
    laptop.receive(wait=5)
    assert "status: verified" in laptop.run("verify", dave).stdout

    # The laptop verifies erin, whom the browser has never looked up: the browser remembers
    # the key and, when it first fetches erin's list under exactly that key, shows verified.
    # (The laptop's later transcript in dave's open chat arrives after its VERIFIED.)
    laptop.run("send", erin, "hello erin")
    laptop.run("verify", erin, "--accept")
    laptop.run("send", dave, "after verifying erin")
    wait_message(page, alice, "after verifying erin")
    safety(page, erin)
    page.wait_for_selector('[data-testid="safety-panel"][data-verified="true"]')
    assert page.get_by_test_id("key-changed").count() == 0


def send_in_browser_to(page: Any, user: str, text: str) -> str:
    open_chat(page, user)
    return send_in_browser(page, text)
