"""The lane fence in the browser (docs/protocol-ws.md §3.1.4): the outbox keeps several sends
of one conversation on their way at once, each naming the one before it in ``after``, so a
refused first message is never overtaken by the rest of the burst; against a relay older than
the fence (``bad_frame`` on ``after``) it sends one at a time without it. A browser user and a
`vox` receiver through a real relay running in this process, whose frame handler the test
wraps to refuse or hold alice's sends.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from server.delivery.connection import DeviceConnection
from server.delivery.frames import FrameError, SendIn
from server.delivery.service import DeliveryService
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
from wire.codes import ErrorCode

N = 5


Act = Callable[[DeviceConnection, SendIn, list[tuple[str, str | None]]], bool]


def intercept(relay: ThreadedRelay, user: str, act: Act) -> list[tuple[str, str | None]]:
    """Run ``act`` on each of ``user``'s durable send frames as the relay reads them (before
    any check; True: dealt with, not handled further). Returns the (id, after) of those
    frames, in the order they arrived."""
    service = relay.relay.state.delivery
    handle = service._handle_send
    seen: list[tuple[str, str | None]] = []

    def handle_send(conn: DeviceConnection, frame: SendIn) -> None:
        if conn.device.user == user and not frame["ephemeral"]:
            seen.append((frame["id"], frame["after"]))
            if act(conn, frame, seen):
                return
        handle(conn, frame)

    service._handle_send = handle_send  # type: ignore[method-assign]
    return seen


def chat(context: Any, relay: ThreadedRelay, tmp_path: Path) -> tuple[Any, str, Vox]:
    alice, bob = unique("alice"), unique("bob")
    vbob = Vox(tmp_path / "bob", relay, bob).register()  # type: ignore[arg-type]
    page = open_app(context, relay)  # type: ignore[arg-type]
    register_in_browser(page, alice)
    open_chat(page, bob)
    send_in_browser(page, "warm-up")  # sessions set up
    vbob.receive_until(lambda g: any(e.get("text") == "warm-up" for e in g))
    return page, alice, vbob


def burst(page: Any) -> None:
    for i in range(N):
        page.get_by_test_id("composer").fill(f"m{i}")
        page.get_by_test_id("send").click()
    page.wait_for_selector('[data-testid="message"][data-state="pending"]', state="detached")


def received_in_order(vbob: Vox) -> list[str]:
    got = vbob.receive_until(lambda g: sum(1 for e in g if e.get("text", "")[:1] == "m") >= N)
    got += vbob.receive(wait=2)  # nothing more (no duplicates) may arrive
    return [e["text"] for e in got if e.get("text", "")[:1] == "m"]


def test_a_refused_first_message_is_never_overtaken_by_the_rest_of_the_burst(
    context: Any, threaded: ThreadedRelay, tmp_path: Path
) -> None:
    page, alice, vbob = chat(context, threaded, tmp_path)
    held: list[tuple[DeviceConnection, SendIn]] = []
    handle = threaded.relay.state.delivery._handle_send

    def refuse_first_late(conn: DeviceConnection, frame: SendIn, seen: list[Any]) -> bool:
        """The burst's sends get no answer until the last one arrived (so the whole burst is
        on its way at once); then the first is refused (busy) and the others are handled:
        refused too (predecessor_missing), the first not being stored."""
        if len(seen) < N:
            held.append((conn, frame))
            return True
        if len(seen) == N:
            first_conn, first = held[0]
            busy = FrameError(ErrorCode.BUSY, "injected busy", first["id"])
            first_conn.push_frame(DeliveryService.frame_error(busy))
            for c, f in held[1:]:
                handle(c, f)
            held.clear()
        return False

    seen = intercept(threaded, alice, refuse_first_late)
    burst(page)
    assert received_in_order(vbob) == [f"m{i}" for i in range(N)]
    # All N went out before the first was answered, each naming the one before it (so they
    # were on their way at once); the relay refused the N-1 behind the refused first one
    # (predecessor_missing) and the browser sent the burst again, in order.
    ids = [cid for cid, _ in seen[:N]]
    assert [after for _, after in seen[:N]] == [None, *ids[:-1]]
    assert [cid for cid, _ in seen[N:]] == ids
    refused = threaded.relay.state.metrics.registry.get_sample_value(
        "vox_sends_refused_total", {"reason": "predecessor_missing"}
    )
    assert refused == N - 1


def test_a_relay_older_than_the_fence_gets_one_send_at_a_time_without_after(
    context: Any, threaded: ThreadedRelay, tmp_path: Path
) -> None:
    page, alice, vbob = chat(context, threaded, tmp_path)
    held: list[tuple[DeviceConnection, SendIn]] = []
    handle = threaded.relay.state.delivery._handle_send

    def old_relay(conn: DeviceConnection, frame: SendIn, seen: list[Any]) -> bool:
        """Refuses ``after`` as a relay without the fence does; the first send is answered
        only once the second (which names it) arrived."""
        if len(seen) == 1:
            held.append((conn, frame))
            return True
        if frame["after"] is not None:
            refusal = "after: Extra inputs are not permitted"
            old = FrameError(ErrorCode.BAD_FRAME, refusal, frame["id"])
            conn.push_frame(DeliveryService.frame_error(old))
            if held:
                handle(*held.pop())
            return True
        return False

    seen = intercept(threaded, alice, old_relay)
    burst(page)
    assert received_in_order(vbob) == [f"m{i}" for i in range(N)]
    # The second send named the first (refused: bad_frame); once the browser saw that, no
    # send named a predecessor again. Only what was refused was sent twice.
    named = [i for i, (_, after) in enumerate(seen) if after is not None]
    first_resend = next(i for i, (cid, _) in enumerate(seen) if cid in dict(seen[:i]))
    assert named[0] == 1 and max(named) < first_resend, seen
    assert len({cid for cid, _ in seen}) == N
    assert len(seen) == N + len(named), seen


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
    context: Any, threaded: ThreadedRelay, tmp_path: Path
) -> None:
    """The message lost with the first lane fence (a burst of 5: bob got m0 m1 m2 m4, the page
    showed 4 — and one burst in a few dozen lost one under load without the fence too): the
    composer was emptied once the send had been written to IndexedDB, by then over the next
    message typed, whose Send then found it empty. Here the write is held while the next
    message is typed."""
    page, _, vbob = chat(context, threaded, tmp_path)
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
