"""Deleting our own message that is still in the outbox (clients/web/src/core/messageops.ts,
``Engine.cancelUnsent``). Still queued — never handed to the relay — the delete (for me or for
everyone) cancels the send: the message, and the reaction queued on it, never reach the peer,
and no DELETE goes out. On its way (handed to the relay, its answer pending) it cannot be
recalled: for me it is removed here only and stays removed once accepted; for everyone the
DELETE follows it in the lane. A browser user and a `vox` peer through a real relay: a relay
process stopped (and the browser offline) for the queued case, a relay in this process whose
frame handler holds the message's send for the in-flight case.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from server.delivery.connection import DeviceConnection
from server.delivery.frames import SendIn
from tests.web.support import (
    TIMEOUT_MS,
    Vox,
    act,
    message,
    open_app,
    open_chat,
    own_relay,
    register_in_browser,
    send_in_browser,
    unique,
    wait_online,
)
from tests.web.threaded_relay import ThreadedRelay

NOTHING_PENDING = (
    "() => [...document.querySelectorAll('[data-testid=message]')]"
    ".every(m => m.dataset.state !== 'pending')"
)


def _about(got: list[dict[str, Any]], mid: str) -> list[dict[str, Any]]:
    """What the peer got of message ``mid``: the message itself or an operation on it."""
    mid = mid.lower()
    return [
        e
        for e in got
        if str(e.get("id", "")).lower() == mid or str(e.get("target", "")).lower() == mid
    ]


@pytest.mark.parametrize("action", ["action-delete-me", "action-delete-everyone"])
def test_a_queued_message_deleted_is_never_sent(context: Any, tmp_path: Path, action: str) -> None:
    with own_relay(tmp_path) as relay:
        alice, bob = unique("webalice"), unique("bob")
        vox = Vox(tmp_path / "bob", relay, bob).register()
        page = open_app(context, relay)
        register_in_browser(page, alice)
        open_chat(page, bob)
        send_in_browser(page, "while online")
        vox.receive_until(lambda g: any(e.get("text") == "while online" for e in g))

        # Offline: the browser has no network and the relay is gone; what is sent is queued.
        context.set_offline(True)
        relay.stop()
        page.wait_for_selector(
            '[data-testid="connection-status"]:not([data-status="online"])', timeout=TIMEOUT_MS
        )
        page.get_by_test_id("composer").fill("doomed")
        page.get_by_test_id("send").click()
        doomed = page.locator('[data-testid="message"][data-state="pending"]', has_text="doomed")
        doomed.wait_for(timeout=TIMEOUT_MS)
        mid = str(doomed.get_attribute("data-message-id"))
        act(page, mid, "react-option", "❤️")  # a queued operation on it: cancelled with it
        page.get_by_test_id("reaction").first.wait_for(timeout=TIMEOUT_MS)
        act(page, mid, action)
        message(page, mid).wait_for(state="detached", timeout=TIMEOUT_MS)
        # Said so (the old bundle said nothing: as if deleted here only, or for everyone).
        withdrawn = page.get_by_test_id("withdrawn")
        assert withdrawn.inner_text() == "withdrawn before sending: it reached no one"
        page.get_by_test_id("composer").fill("after it")
        page.get_by_test_id("send").click()
        page.locator('[data-testid="message"]', has_text="after it").wait_for(timeout=TIMEOUT_MS)

        # Back online: only "after it" goes out.
        relay.start()
        context.set_offline(False)
        wait_online(page)
        page.wait_for_function(NOTHING_PENDING, timeout=TIMEOUT_MS)
        got = vox.receive_until(lambda g: any(e.get("text") == "after it" for e in g))
        got += vox.receive(wait=3)  # nothing of the deleted message may follow
        assert _about(got, mid) == [], got
        assert [e.get("text") for e in got].count("after it") == 1, got

        # Gone here for good, the outbox empty: nothing is sent after a reload either.
        page.reload()
        wait_online(page)
        page.get_by_test_id(f"chat-item-{bob}").click()
        page.locator('[data-testid="message"]', has_text="after it").wait_for(timeout=TIMEOUT_MS)
        assert message(page, mid).count() == 0
        assert _about(vox.receive(wait=3), mid) == []


class HoldFirst:
    """Wraps the relay's send handler: alice's first durable send after ``arm`` gets no answer
    (it stays in flight) until her next send arrives; then both are handled, in order."""

    def __init__(self, relay: ThreadedRelay, user: str) -> None:
        self.service = relay.relay.state.delivery
        self.handle = self.service._handle_send
        self.user = user
        self.armed = False
        self.held: list[tuple[DeviceConnection, SendIn]] = []
        self.seen: list[tuple[str, str | None]] = []
        self.holding = threading.Event()
        self.service._handle_send = self.handle_send  # type: ignore[method-assign]

    def handle_send(self, conn: DeviceConnection, frame: SendIn) -> None:
        if self.armed and conn.device.user == self.user and not frame["ephemeral"]:
            self.seen.append((frame["id"], frame["after"]))
            if len(self.seen) == 1:
                self.held.append((conn, frame))
                self.holding.set()
                return
            for c, f in self.held:
                self.handle(c, f)
            self.held.clear()
        self.handle(conn, frame)


def _in_flight_chat(
    context: Any, relay: ThreadedRelay, tmp_path: Path
) -> tuple[Any, str, Vox, HoldFirst, str]:
    """alice (browser) and bob (`vox`), sessions set up; alice's "doomed" is on its way, its
    answer held. Returns the page, bob's name, bob, the hold and the message id."""
    alice, bob = unique("alice"), unique("bob")
    vbob = Vox(tmp_path / "bob", relay, bob).register()  # type: ignore[arg-type]
    page = open_app(context, relay)  # type: ignore[arg-type]
    register_in_browser(page, alice)
    open_chat(page, bob)
    send_in_browser(page, "warm-up")
    vbob.receive_until(lambda g: any(e.get("text") == "warm-up" for e in g))
    hold = HoldFirst(relay, alice)
    hold.armed = True
    page.get_by_test_id("composer").fill("doomed")
    page.get_by_test_id("send").click()
    assert hold.holding.wait(timeout=TIMEOUT_MS / 1000)
    doomed = page.locator('[data-testid="message"][data-state="pending"]', has_text="doomed")
    mid = str(doomed.get_attribute("data-message-id"))
    assert hold.seen == [(mid, None)]
    return page, bob, vbob, hold, mid


def test_an_in_flight_message_deleted_for_me_still_arrives_and_stays_deleted_here(
    context: Any, threaded: ThreadedRelay, tmp_path: Path
) -> None:
    page, bob, vbob, hold, mid = _in_flight_chat(context, threaded, tmp_path)
    act(page, mid, "action-delete-me")
    message(page, mid).wait_for(state="detached", timeout=TIMEOUT_MS)
    assert page.get_by_test_id("withdrawn").count() == 0  # it was sent: not withdrawn
    # The next send releases the held one: it cannot be recalled, and goes first.
    page.get_by_test_id("composer").fill("after it")
    page.get_by_test_id("send").click()
    got = vbob.receive_until(lambda g: any(e.get("text") == "after it" for e in g))
    assert [e.get("text") for e in got if e.get("text")] == ["doomed", "after it"], got
    assert hold.seen[0] == (mid, None) and hold.seen[1][1] == mid, hold.seen
    # Accepted meanwhile: still deleted here, after a reload too.
    page.wait_for_function(NOTHING_PENDING, timeout=TIMEOUT_MS)
    assert message(page, mid).count() == 0
    page.reload()
    wait_online(page)
    page.get_by_test_id(f"chat-item-{bob}").click()
    page.locator('[data-testid="message"]', has_text="after it").wait_for(timeout=TIMEOUT_MS)
    assert message(page, mid).count() == 0


def test_an_in_flight_message_deleted_for_everyone_is_followed_by_its_delete(
    context: Any, threaded: ThreadedRelay, tmp_path: Path
) -> None:
    page, _bob, vbob, hold, mid = _in_flight_chat(context, threaded, tmp_path)
    act(page, mid, "action-delete-everyone")
    # A tombstone here at once; the DELETE goes after it (and releases it).
    page.locator(f'[data-testid="message"][data-message-id="{mid}"][data-deleted="true"]').wait_for(
        timeout=TIMEOUT_MS
    )
    got = vbob.receive_until(
        lambda g: any(e.get("kind") == "delete" and str(e.get("target")).lower() == mid for e in g)
    )
    assert [e.get("text") for e in _about(got, mid) if e.get("text")] == ["doomed"], got
    assert len(hold.seen) == 2 and hold.seen[1][1] == mid, hold.seen
    page.wait_for_function(NOTHING_PENDING, timeout=TIMEOUT_MS)
