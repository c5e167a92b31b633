"""The lane fence in the browser (docs/protocol-ws.md §3.1.4) and the burst it carries: a
browser user and a `vox` receiver through a real relay running in this process (whose frame
handler a test may wrap).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.web.support import (
    TIMEOUT_MS,
    Vox,
    open_app,
    open_chat,
    register_in_browser,
    send_in_browser,
    unique,
)
from tests.web.threaded_relay import ThreadedRelay


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[ThreadedRelay]:
    r = ThreadedRelay(tmp_path)
    try:
        yield r
    finally:
        r.close()


def chat(context: Any, relay: ThreadedRelay, tmp_path: Path) -> tuple[Any, str, Vox]:
    alice, bob = unique("alice"), unique("bob")
    vbob = Vox(tmp_path / "bob", relay, bob).register()  # type: ignore[arg-type]
    page = open_app(context, relay)  # type: ignore[arg-type]
    register_in_browser(page, alice)
    open_chat(page, bob)
    send_in_browser(page, "warm-up")  # sessions set up
    vbob.receive_until(lambda g: any(e.get("text") == "warm-up" for e in g))
    return page, alice, vbob


# Holds IndexedDB's "kv" store with a read-write transaction kept alive (a read issued as each
# one completes) until ``window.voxRelease()``: the app's writes queue behind it.
HOLD_WRITES = """() => new Promise((held, failed) => {
  const open = indexedDB.open("vox-web");
  open.onerror = () => failed(open.error);
  open.onsuccess = () => {
    const db = open.result;
    const store = db.transaction("kv", "readwrite").objectStore("kv");
    let hold = true;
    window.voxRelease = () => { hold = false; };
    const spin = () => {
      store.get("-").onsuccess = () => (hold ? spin() : db.close());
    };
    spin();
    store.get("-").onsuccess = () => held(null);
  };
})"""


def test_what_is_typed_while_a_send_is_being_written_is_the_next_message(
    context: Any, relay: ThreadedRelay, tmp_path: Path
) -> None:
    """The message lost with the first lane fence (a burst of 5: bob got m0 m1 m2 m4, the page
    showed 4 — and one burst in a few dozen lost one under load without the fence too): the
    composer was emptied once the send had been written to IndexedDB, by then over the next
    message typed, whose Send then found it empty. Here the write is held while the next
    message is typed."""
    page, _, vbob = chat(context, relay, tmp_path)
    composer = page.get_by_test_id("composer")
    page.evaluate(HOLD_WRITES)
    composer.fill("first")
    page.get_by_test_id("send").click()
    composer.fill("second")
    page.evaluate("() => window.voxRelease()")
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=message]')].some("
        "m => m.textContent.includes('first') && m.dataset.state !== 'pending')",
        timeout=TIMEOUT_MS,
    )
    assert composer.input_value() == "second"
    page.get_by_test_id("send").click()
    got = vbob.receive_until(lambda g: any(e.get("text") == "second" for e in g))
    assert [e["text"] for e in got if e.get("text") in {"first", "second"}] == ["first", "second"]
