"""The lane fence in the browser (docs/protocol-ws.md §3.1.4): the outbox keeps several sends
of one conversation on their way at once, each naming the one before it in ``after``, so a
refused first message is never overtaken by the rest of the burst; against a relay older than
the fence (``bad_frame`` on ``after``) it sends one at a time without it. A browser user and a
`vox` receiver through a real relay running in this process, whose frame handler the test
wraps to refuse or hold alice's sends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from server.delivery.connection import DeviceConnection
from server.delivery.frames import FrameError
from server.delivery.service import DeliveryService
from tests.web.support import (
    Vox,
    open_app,
    open_chat,
    register_in_browser,
    send_in_browser,
    unique,
)
from tests.web.threaded_relay import ThreadedRelay
from wire.codes import ErrorCode
from wire.frames import SendFrame

N = 5


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[ThreadedRelay]:
    r = ThreadedRelay(tmp_path)
    try:
        yield r
    finally:
        r.close()


Act = Callable[[DeviceConnection, SendFrame, list[tuple[str, str | None]]], bool]


def intercept(relay: ThreadedRelay, user: str, act: Act) -> list[tuple[str, str | None]]:
    """Run ``act`` on each of ``user``'s durable send frames as the relay reads them (before
    any check; True: dealt with, not handled further). Returns the (id, after) of those
    frames, in the order they arrived."""
    service = relay.relay.state.delivery
    handle = service._handle_send
    seen: list[tuple[str, str | None]] = []

    def handle_send(conn: DeviceConnection, frame: SendFrame) -> None:
        if conn.device.user == user and not frame.ephemeral:
            seen.append((frame.id, frame.after))
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
    context: Any, relay: ThreadedRelay, tmp_path: Path
) -> None:
    page, alice, vbob = chat(context, relay, tmp_path)
    held: list[tuple[DeviceConnection, SendFrame]] = []

    def refuse_first_late(conn: DeviceConnection, frame: SendFrame, seen: list[Any]) -> bool:
        """The burst's first send gets no answer until the last one arrived (so the whole
        burst is on its way at once), then a transient refusal (busy)."""
        if len(seen) == 1:
            held.append((conn, frame))
            return True
        if len(seen) == N and held:
            first_conn, first = held.pop()
            busy = FrameError(ErrorCode.BUSY, "injected busy", first.id)
            first_conn.push_frame(DeliveryService.frame_error(busy))
        return False

    seen = intercept(relay, alice, refuse_first_late)
    burst(page)
    assert received_in_order(vbob) == [f"m{i}" for i in range(N)]
    # All N went out before the first was answered, each naming the one before it (so they
    # were on their way at once); the relay refused the N-1 behind the refused first one
    # (predecessor_missing) and the browser sent the burst again, in order.
    ids = [cid for cid, _ in seen[:N]]
    assert [after for _, after in seen[:N]] == [None, *ids[:-1]]
    assert [cid for cid, _ in seen[N:]] == ids
    refused = relay.relay.state.metrics.registry.get_sample_value(
        "vox_sends_refused_total", {"reason": "predecessor_missing"}
    )
    assert refused == N - 1


def test_a_relay_older_than_the_fence_gets_one_send_at_a_time_without_after(
    context: Any, relay: ThreadedRelay, tmp_path: Path
) -> None:
    page, alice, vbob = chat(context, relay, tmp_path)
    held: list[tuple[DeviceConnection, SendFrame]] = []
    handle = relay.relay.state.delivery._handle_send

    def old_relay(conn: DeviceConnection, frame: SendFrame, seen: list[Any]) -> bool:
        """Refuses ``after`` as a relay without the fence does; the first send is answered
        only once the second (which names it) arrived."""
        if len(seen) == 1:
            held.append((conn, frame))
            return True
        if frame.after is not None:
            old = FrameError(ErrorCode.BAD_FRAME, "after: Extra inputs are not permitted", frame.id)
            conn.push_frame(DeliveryService.frame_error(old))
            if held:
                handle(*held.pop())
            return True
        return False

    seen = intercept(relay, alice, old_relay)
    burst(page)
    assert received_in_order(vbob) == [f"m{i}" for i in range(N)]
    # The second send named the first (refused: bad_frame); once the browser saw that, no
    # send named a predecessor again. Only what was refused was sent twice.
    named = [i for i, (_, after) in enumerate(seen) if after is not None]
    first_resend = next(i for i, (cid, _) in enumerate(seen) if cid in dict(seen[:i]))
    assert named[0] == 1 and max(named) < first_resend, seen
    assert len({cid for cid, _ in seen}) == N
    assert len(seen) == N + len(named), seen
