"""Group messages and group operations are queued offline like direct ones: kept in the
encrypted outbox (a reload does not lose them), shown as queued, and sent in order, each once,
when the relay is back; membership changes are not queued (their controls wait for the
connection, with the reason on screen). A browser user and a `vox` member through a real
relay that is stopped (and the browser offline) in between.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.web.support import (
    TIMEOUT_MS,
    Vox,
    act,
    message,
    open_app,
    own_relay,
    register_in_browser,
    send_in_browser,
    unique,
    wait_message,
    wait_online,
)


def queue_in_group(page: Any, text: str) -> str:
    page.get_by_test_id("composer").fill(text)
    page.get_by_test_id("send").click()
    msg = page.locator('[data-testid="message"]', has_text=text).last
    msg.wait_for()
    assert msg.get_attribute("data-state") == "pending"
    assert msg.get_by_test_id("message-state").inner_text() == "🕓 queued"
    return str(msg.get_attribute("data-message-id"))


def test_group_messages_and_operations_queued_offline_survive_a_reload_and_go_once_in_order(
    context: Any, tmp_path: Path
) -> None:
    with own_relay(tmp_path) as relay:
        alice, bob = unique("alice"), unique("bob")
        vbob = Vox(tmp_path / "bob", relay, bob).register()
        page = open_app(context, relay)
        register_in_browser(page, alice)
        name = f"q{unique('')}"
        page.get_by_test_id("group-name").fill(name)
        page.get_by_test_id("group-members").fill(bob)
        page.get_by_test_id("group-create").click()
        page.get_by_test_id(f"group-member-{bob}").wait_for()
        first = send_in_browser(page, "first online")
        second = send_in_browser(page, "second online")
        got = vbob.receive_until(lambda g: any(e.get("id") == second for e in g))
        group = f"group:{next(e for e in got if e.get('id') == second)['group']}"
        hers = vbob.run("send", group, "bob here").stdout.strip()
        wait_message(page, bob, "bob here")
        # The service worker keeps the shell, so the app also opens with the relay gone.
        page.wait_for_function("() => !!navigator.serviceWorker.controller", timeout=TIMEOUT_MS)

        context.set_offline(True)
        relay.stop()
        page.wait_for_selector('[data-testid="connection-status"][data-status="offline"]')
        one = queue_in_group(page, "queued one")
        two = queue_in_group(page, "queued two")
        act(page, first, "action-edit")
        page.get_by_test_id("composer").fill("first, edited offline")
        page.get_by_test_id("send").click()
        message(page, first).get_by_test_id("edited").wait_for()
        act(page, second, "action-delete-everyone")
        message(page, second).get_by_test_id("tombstone").wait_for()
        act(page, hers, "react-option", "👍")
        message(page, hers).locator('[data-testid="reaction"][data-emoji="👍"]').wait_for()
        page.get_by_test_id("timer-select").select_option("3600")
        page.wait_for_selector('[data-testid="timer-select"][data-timer="3600"]')
        page.wait_for_selector('[data-testid="queued"][data-count="6"]')
        # Membership changes need the connection: disabled, and the page says why.
        page.get_by_test_id("group-offline").wait_for()
        assert page.get_by_test_id("group-leave").is_disabled()
        assert page.get_by_test_id(f"group-remove-{bob}").is_disabled()

        # A reload while offline: everything is still queued (read back from the store).
        page.reload()
        page.wait_for_selector('[data-testid="connection-status"][data-status="offline"]')
        page.get_by_test_id(f"group-item-{name}").click()
        page.wait_for_selector('[data-testid="queued"][data-count="6"]')
        for mid in (one, two):
            assert message(page, mid).get_attribute("data-state") == "pending"

        # Back online: the queue goes out in order, once.
        relay.start()
        context.set_offline(False)
        wait_online(page)
        page.get_by_test_id("queued").wait_for(state="detached", timeout=TIMEOUT_MS)
        for mid in (one, two):
            page.wait_for_selector(
                f'[data-testid="message"][data-message-id="{mid}"]:not([data-state="pending"])'
            )
        got = vbob.receive_until(
            lambda g: any(e.get("kind") == "timer" and e.get("seconds") == 3600 for e in g)
        )
        order = [
            (e.get("kind"), e.get("id") or e.get("target"))
            for e in got
            if e.get("kind") in {"text", "edit", "delete", "reaction", "timer"}
        ]
        texts = [mid for kind, mid in order if kind == "text"]
        assert texts == [one, two], order
        kinds = [kind for kind, _ in order]
        assert kinds == ["text", "text", "edit", "delete", "reaction", "timer"], order
        edit = next(e for e in got if e.get("kind") == "edit")
        assert (edit["target"], edit["text"]) == (first, "first, edited offline")
        assert next(e for e in got if e.get("kind") == "delete")["target"] == second
        reaction = next(e for e in got if e.get("kind") == "reaction")
        assert (reaction["target"], reaction["emoji"]) == (hers, "👍")
        assert all(e.get("conversation") == group for e in got if e.get("kind") != "receipt")
        # Nothing comes a second time.
        again = vbob.receive(wait=3)
        assert not [e for e in again if e.get("kind") in {"text", "edit", "delete", "reaction"}]
