"""Browser-side behaviour: notifications for other chats while the tab is open (Notification
API) and the service worker, typing indicators between two browsers, and the optional
passphrase of the local store."""

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
    wait_online,
)

RECORD_NOTIFICATIONS = """
window.__notes = [];
const Real = window.Notification;
class Recording extends Real {
  constructor(title, options) {
    super(title, options);
    window.__notes.push([title, options && options.body]);
  }
}
Object.defineProperty(Recording, 'permission', { get: () => Real.permission });
Recording.requestPermission = (...a) => Real.requestPermission(...a);
window.Notification = Recording;
"""


def test_messages_in_other_chats_raise_a_notification_and_the_service_worker_registers(
    browser: Any, tmp_path: Path
) -> None:
    relay = RelayProc(tmp_path / "relay" / "vox-data", env={"VOX_BRAND__NAME": "AcmeChat"})
    (tmp_path / "relay").mkdir()
    relay.start()
    ctx = browser.new_context()
    ctx.set_default_timeout(60_000)
    try:
        ctx.grant_permissions(["notifications"], origin=relay.url)
        ctx.add_init_script(RECORD_NOTIFICATIONS)
        alice, bob, carol = unique("alice"), unique("bob"), unique("carol")
        vbob = Vox(tmp_path / "bob", relay, bob).register()
        vcarol = Vox(tmp_path / "carol", relay, carol).register()
        page = open_app(ctx, relay)
        register_in_browser(page, alice)
        page.reload()  # permission already granted: notifications are on at start
        wait_online(page)
        open_chat(page, bob)
        send_in_browser(page, "hi bob")
        vbob.receive_until(lambda g: any(m.get("text") == "hi bob" for m in g))
        vbob.send(alice, "in the open chat")
        wait_message(page, bob, "in the open chat")
        vcarol.send(alice, "in another chat")
        page.get_by_test_id(f"unread-{carol}").wait_for()
        page.wait_for_function("() => window.__notes.length > 0")
        notes = page.evaluate("window.__notes")
        assert notes == [["AcmeChat", f"{carol}: in another chat"]]  # none for the open chat
        scope = page.evaluate(
            "navigator.serviceWorker.ready.then(r => r.active && r.active.scriptURL)"
        )
        assert scope == f"{relay.url}/sw.js"
    finally:
        ctx.close()
        relay.stop()


#: Well under the receiver's 6-second expiry of an indicator, well over a loopback hop (it
#: used to stay on screen until that expiry after a message or a cleared draft).
TYPING_ENDS_WITHIN_MS = 3_000

#: The message is on screen and no typing indicator is: checked in one frame.
MESSAGE_AND_NO_TYPING = """(text) =>
  [...document.querySelectorAll('[data-testid=message]')].some(m => m.textContent.includes(text))
  && !document.querySelector('[data-testid=typing]')"""


def test_typing_indicators_between_two_browsers(browser: Any, relay: RelayProc) -> None:
    alice, bob = unique("alice"), unique("bob")
    ctx_a, ctx_b = browser.new_context(), browser.new_context()
    try:
        for ctx in (ctx_a, ctx_b):
            ctx.set_default_timeout(60_000)
        pa, pb = open_app(ctx_a, relay), open_app(ctx_b, relay)
        register_in_browser(pa, alice)
        register_in_browser(pb, bob)
        open_chat(pa, bob)
        send_in_browser(pa, "browser to browser")
        pb.get_by_test_id(f"chat-item-{alice}").click()
        wait_message(pb, alice, "browser to browser")
        typing = pa.get_by_test_id("typing")
        # A cleared draft sends "stopped": alice's indicator goes at once, not at its expiry.
        pb.get_by_test_id("composer").press_sequentially("a draft", delay=20)
        typing.wait_for()
        pb.get_by_test_id("composer").fill("")
        typing.wait_for(state="hidden", timeout=TYPING_ENDS_WITHIN_MS)
        # A message from the typist ends the indicator as it arrives.
        pb.get_by_test_id("composer").press_sequentially("typing", delay=50)
        typing.wait_for()
        pb.get_by_test_id("send").click()
        wait_message(pa, bob, "typing")
        pa.wait_for_function(MESSAGE_AND_NO_TYPING, arg="typing", timeout=TYPING_ENDS_WITHIN_MS)
        # Read receipts: bob has the chat open, so alice's message shows as read.
        pa.wait_for_selector('[data-testid="message"][data-state="read"]')
    finally:
        ctx_a.close()
        ctx_b.close()


def test_a_store_passphrase_is_asked_after_a_reload(context: Any, relay: RelayProc) -> None:
    page = open_app(context, relay)
    page.get_by_test_id("register-username").fill(unique("alice"))
    page.get_by_test_id("store-passphrase").fill("correct horse")
    page.get_by_test_id("register-submit").click()
    wait_online(page)
    page.reload()
    page.get_by_test_id("unlock-passphrase").fill("wrong")
    page.get_by_test_id("unlock-submit").click()
    page.get_by_text("wrong passphrase").wait_for()
    page.get_by_test_id("unlock-passphrase").fill("correct horse")
    page.get_by_test_id("unlock-submit").click()
    wait_online(page)
