"""Verification synced between an account's devices (the VERIFIED content, 0x0D,
docs/protocol-client.md §2): a browser and a `vox` CLI device of the same account, through a
real relay. Accepting a contact's key on one device marks it verified on the other — at once
when that device holds the same key, or when it first fetches the contact's list under
exactly that key. Clearing the verification ("unverify", VERIFIED with state 2) on one
device makes the contact trusted on first use again on the other, both ways; the browser's
sync goes through its outbox (kept while the relay is down, sent once it is back).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.web.support import (
    TIMEOUT_MS,
    RelayProc,
    Vox,
    open_app,
    open_chat,
    own_relay,
    register_in_browser,
    send_in_browser,
    unique,
    wait_message,
    wait_online,
)


def safety(page: Any, user: str) -> Any:
    """Open ``user``'s chat and its safety panel."""
    open_chat(page, user)
    if not page.get_by_test_id("safety-panel").is_visible():  # it stays open across chats
        page.get_by_test_id("safety-open").click()
    return page.get_by_test_id("safety-panel")


def linked_laptop(context: Any, relay: RelayProc, tmp_path: Path, alice: str) -> tuple[Any, Vox]:
    """A browser registered as ``alice`` and a second device of her account: the vox CLI,
    joined with the code the browser shows."""
    page = open_app(context, relay)
    register_in_browser(page, alice)
    page.get_by_test_id("devices-open").click()
    page.get_by_test_id("link-new-device").click()
    code = page.get_by_test_id("link-new-code").inner_text()
    laptop = Vox(tmp_path / "alice-laptop", relay, alice)
    laptop.run("join", code, "--server", relay.url)
    page.get_by_test_id("link-new-status").filter(has_text="linked device").wait_for()
    page.get_by_test_id("devices-open").click()
    return page, laptop


def test_a_key_accepted_on_one_device_is_verified_on_the_other(
    context: Any, relay: RelayProc, tmp_path: Path
) -> None:
    alice, carol, dave, erin = (unique(p) for p in ("alice", "carol", "dave", "erin"))
    for user in (carol, dave, erin):
        Vox(tmp_path / user, relay, user).register()
    page, laptop = linked_laptop(context, relay, tmp_path, alice)

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


def laptop_status(laptop: Vox, user: str, want: str) -> None:
    """Receive on the laptop until ``vox verify USER`` says ``status: WANT``."""
    for _ in range(20):
        if f"status: {want}" in laptop.run("verify", user).stdout:
            return
        laptop.receive(wait=2)
    raise AssertionError(laptop.run("verify", user).stdout)


def test_a_verification_cleared_on_one_device_is_cleared_on_the_other_both_ways(
    context: Any, tmp_path: Path
) -> None:
    with own_relay(tmp_path) as relay:
        alice, carol = unique("alice"), unique("carol")
        Vox(tmp_path / carol, relay, carol).register()
        page, laptop = linked_laptop(context, relay, tmp_path, alice)
        send_in_browser_to(page, carol, "hello carol")
        laptop.run("send", carol, "hello from the laptop")
        verified = '[data-testid="safety-panel"][data-verified="true"]'
        unverified = '[data-testid="safety-panel"][data-verified="false"]'

        # The laptop verifies carol, then clears it: the browser follows both times.
        panel = safety(page, carol)
        laptop.run("verify", carol, "--accept")
        page.wait_for_selector(verified)
        assert panel.get_by_test_id("verify-clear").is_visible()
        laptop.run("verify", carol, "--clear")
        page.wait_for_selector(unverified)
        assert panel.get_by_test_id("verify-clear").count() == 0
        assert page.get_by_test_id("key-changed").count() == 0

        # The browser verifies carol, then clears it: the laptop follows both times. (Either
        # button closes the panel.)
        panel.get_by_test_id("verify-accept").click()
        safety(page, carol)
        page.wait_for_selector(verified)
        laptop_status(laptop, carol, "verified")
        panel.get_by_test_id("verify-clear").click()
        safety(page, carol)
        page.wait_for_selector(unverified)
        laptop_status(laptop, carol, "trusted on first use")

        # Verified again, then cleared with the relay down: the browser keeps the sync in its
        # outbox (across a reload) and sends it once the relay is back.
        panel.get_by_test_id("verify-accept").click()
        laptop_status(laptop, carol, "verified")
        page.wait_for_function("() => !!navigator.serviceWorker.controller", timeout=TIMEOUT_MS)
        context.set_offline(True)
        relay.stop()
        page.wait_for_selector('[data-testid="connection-status"][data-status="offline"]')
        safety(page, carol).get_by_test_id("verify-clear").click()
        safety(page, carol)
        page.wait_for_selector(unverified)
        page.reload()
        page.wait_for_selector('[data-testid="connection-status"][data-status="offline"]')
        relay.start()
        context.set_offline(False)
        wait_online(page)
        laptop_status(laptop, carol, "trusted on first use")
        safety(page, carol)
        page.wait_for_selector(unverified)
        assert page.get_by_test_id("key-changed").count() == 0
