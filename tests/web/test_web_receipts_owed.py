"""Owed receipts in the browser client (``clients/web/src/core/receipts.ts``;
``docs/protocol-client.md`` §5 *Owed receipts*): a delivery or read receipt is owed from the
commit that makes it due until the relay accepted it, kept in the encrypted store, and sent at
the next connection — so one that could not leave (the tab closed right after the message was
stored, the relay unreachable when the messages were read) still reaches the sender.

The two Chromium-and-relay tests fail on the bundle before owed receipts (its receipts were
fire-and-forget): checked by serving ``main``'s committed ``clients/web/dist`` (``git checkout
main -- clients/web/dist``) and running this file — the sender's message stayed "sent" /
"delivered". The rules of what is owed (the 5,000 cap, the 7-day limit, coalescing, a receipt
lost with a replaced connection) run through the test kit against a stand-in store and relay.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.web.support import (
    TIMEOUT_MS,
    RelayProc,
    Vox,
    kit_call,
    kit_page,
    open_app,
    own_relay,
    register_in_browser,
    unique,
    wait_online,
)


def _state(vox: Vox, peer: str, mid: str) -> str | None:
    """The state (sent, delivered, read) of ``vox``'s message ``mid`` to ``peer``."""
    out = vox.run("history", peer, "--json").stdout
    for line in out.splitlines():
        m = json.loads(line)
        if m.get("id") == mid:
            return str(m.get("state"))
    return None


def _wait_state(vox: Vox, peer: str, mid: str, state: str, within: float = 60) -> None:
    """``vox`` takes what arrives (receipts) until its message ``mid`` shows ``state``."""
    seen: str | None = None
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        vox.receive(wait=2)
        seen = _state(vox, peer, mid)
        if seen == state:
            return
    raise AssertionError(f"{vox.username}'s message {mid} stayed {seen!r}, never {state!r}")


def _drop_sends(page: Any, dropped: list[str]) -> None:
    """Every ``send`` frame of ``page``'s WebSocket is swallowed (recorded in ``dropped``):
    the relay never sees it; everything else passes both ways."""

    def route(ws: Any) -> None:
        server = ws.connect_to_server()

        def from_page(message: str | bytes) -> None:
            if isinstance(message, str) and json.loads(message).get("type") == "send":
                dropped.append(message)
                return
            server.send(message)

        ws.on_message(from_page)

    page.route_web_socket("**/v1/ws", route)


#: The names of the owed-receipt records in the page's IndexedDB (names are not sealed).
OWED_RECORDS = """async () => {
  const db = await new Promise((ok, no) => {
    const r = indexedDB.open('vox-web');
    r.onsuccess = () => ok(r.result);
    r.onerror = () => no(r.error);
  });
  const keys = await new Promise((ok, no) => {
    const r = db.transaction('kv').objectStore('kv').getAllKeys();
    r.onsuccess = () => ok(r.result);
    r.onerror = () => no(r.error);
  });
  db.close();
  return keys.filter((k) => String(k).startsWith('receipt-owed:'));
}"""


def _wait_nothing_owed(page: Any) -> None:
    for _ in range(TIMEOUT_MS // 100):
        if not page.evaluate(OWED_RECORDS):
            return
        page.wait_for_timeout(100)
    assert page.evaluate(OWED_RECORDS) == [], "still owed"


def _receipt_lost_with_the_tab(
    context: Any, relay: RelayProc, tmp_path: Path
) -> tuple[Vox, str, str]:
    """A browser user receives a message from a new `vox` user, and the tab closes with its
    delivery receipt never sent (owed: its record stored): the `vox` user, the browser user
    and the message id."""
    alice, bob = unique("webalice"), unique("bob")
    vbob = Vox(tmp_path / "bob", relay, bob).register()
    page = context.new_page()
    dropped: list[str] = []
    _drop_sends(page, dropped)  # the receipt never leaves this tab
    page.goto(relay.url + "/")
    register_in_browser(page, alice)
    mid = vbob.send(alice, "did it arrive?")
    # Shown: stored (the page renders after the commit) and acked; its receipt was tried.
    page.get_by_test_id(f"unread-{bob}").wait_for()
    for _ in range(TIMEOUT_MS // 100):
        if dropped:
            break
        page.wait_for_timeout(100)
    assert dropped, "the page never tried to send the delivery receipt"
    assert _state(vbob, alice, mid) == "sent"
    assert page.evaluate(OWED_RECORDS) == [f"receipt-owed:1:{mid}"]
    page.close()  # the tab goes before anything else could carry the receipt
    return vbob, alice, mid


def test_a_delivery_receipt_lost_with_the_closed_tab_goes_when_the_app_is_opened_again(
    context: Any, relay: RelayProc, tmp_path: Path
) -> None:
    vbob, alice, mid = _receipt_lost_with_the_tab(context, relay, tmp_path)
    again = open_app(context, relay)  # the same browser profile, nothing intercepted now
    wait_online(again)
    _wait_state(vbob, alice, mid, "delivered")
    _wait_nothing_owed(again)  # taken: no longer owed


def test_a_receipt_owed_to_an_account_deleted_since_is_given_up(
    context: Any, relay: RelayProc, tmp_path: Path
) -> None:
    vbob, _, _ = _receipt_lost_with_the_tab(context, relay, tmp_path)
    vbob.run("account", "delete", "--yes")
    again = open_app(context, relay)
    wait_online(again)
    _wait_nothing_owed(again)  # refused as unknown_user / account_deleted: given up


def test_read_receipts_of_messages_read_while_the_relay_was_unreachable_go_once_it_is_back(
    context: Any, tmp_path: Path
) -> None:
    with own_relay(tmp_path) as relay:
        alice, bob = unique("webalice"), unique("bob")
        vbob = Vox(tmp_path / "bob", relay, bob).register()
        page = open_app(context, relay)
        register_in_browser(page, alice)
        mid = vbob.send(alice, "read me offline")
        page.get_by_test_id(f"unread-{bob}").wait_for()
        _wait_state(vbob, alice, mid, "delivered")

        relay.stop()
        page.wait_for_selector('[data-testid="connection-status"][data-status="offline"]')
        page.get_by_test_id(f"chat-item-{bob}").click()  # read now: the READ cannot go
        page.get_by_test_id(f"unread-{bob}").wait_for(state="detached")
        assert page.get_by_test_id("connection-status").get_attribute("data-status") != "online"

        relay.start()
        wait_online(page)
        _wait_state(vbob, alice, mid, "read")


def _id(i: int) -> str:
    return f"{i:032x}"


def test_owed_receipts_are_capped_given_up_after_a_week_coalesced_and_cleared_once_taken(
    browser: Any,
) -> None:
    with kit_page(browser) as page:
        got = kit_call(page, "receiptsScenario")
    assert (got["max"], got["chunk"], got["ttl"]) == (5000, 500, 7 * 86400_000)
    # 5,001 ids owed at once, then 2 more: the 3 oldest go; another recipient is not touched.
    assert got["capped"] == {"stored": 5001, "oldest": [False, False, False, True], "carol": True}
    # Each tried once (the relay refused): in receipts of at most 500 ids.
    assert got["firstSends"] == [["bob", 1, 500]] * 10 + [["bob", 1, 2], ["carol", 2, 1]]
    # A week later: the first 4,998 are given up; the rest goes, and nothing is owed after.
    assert got["resumed"] == {
        "sends": [["bob", 1, [_id(5001), _id(5002)]], ["carol", 2, [_id(1)]]],
        "stored": [],
        "size": 0,
    }
    # Ids owed while one receipt is on its way go together in the next.
    assert got["coalesced"] == {"sends": [[_id(10)], [_id(11), _id(12)]], "stored": 0}
    # On its way when the connection was replaced, and lost with it: sent again at once.
    assert got["replaced"] == {"sends": [["erin", 2, [_id(20)]]] * 2, "stored": 0}
    # Refused on the current connection: still owed, tried again at the next one.
    assert got["refused"] == {"sends": 1, "stored": [f"receipt-owed:1:{_id(30)}"]}
