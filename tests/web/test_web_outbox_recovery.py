"""The browser's outbox after something went wrong on the way (clients/web/src/core/engine.ts):

* a send whose answer never comes (a half-open connection, an answer lost) is given up after
  ``ANSWER_TIMEOUT_MS`` (30 s, like the SDK): the connection is dropped and made again, and the
  send goes out again with the same client id — the relay answers with its first ``accepted``
  and stores it once (protocol-ws §3.1.1);
* a send that failed with a connection lost while it was on its way (here: a REST request of its
  session setup) resumes its conversation at once when the lane was pumped meanwhile (a
  reconnect, a new send): it used to wait for the next pump or 10 s;
* an outbox record stored by an older version (``attempts`` left at 0 although it was sent) is
  taken as handed to the relay: a delete for everyone follows it instead of cancelling it;
* a send the relay refuses for now (``busy``, ``internal``, ``rate_limited``) goes out again
  after the SDK's backoff (0.2 s doubling, at most 2 s), not 10 s later (and ``rate_limited``
  is retried, not failed).

A browser user and a `vox` peer through a relay running in this process, whose frame handler
the tests wrap; the page's timers run on Playwright's clock, moved on (or frozen) by the test.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from server.delivery.connection import DeviceConnection
from server.delivery.frames import FrameError, SendIn
from server.delivery.service import DeliveryService
from tests.web.support import (
    TIMEOUT_MS,
    Vox,
    act,
    message,
    open_app,
    open_chat,
    register_in_browser,
    send_in_browser,
    unique,
    wait_online,
)
from tests.web.threaded_relay import ThreadedRelay
from wire.codes import CloseCode, ErrorCode

ANSWER_TIMEOUT_MS = 30_000  # engine.ts ANSWER_TIMEOUT_MS
NOTHING_PENDING = (
    "() => [...document.querySelectorAll('[data-testid=message]')]"
    ".every(m => m.dataset.state !== 'pending')"
)


class Answered:
    """Forwards to a relay connection; sets ``event`` when it answers send ``frame_id`` with
    ``accepted``."""

    drop = False

    def __init__(self, conn: DeviceConnection, frame_id: str, event: threading.Event) -> None:
        object.__setattr__(self, "_conn", conn)
        object.__setattr__(self, "_frame_id", frame_id)
        object.__setattr__(self, "_event", event)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._conn, name, value)

    def _passes(self, text: str) -> bool:
        """Whether frame ``text`` goes out (sets ``event`` when it is the watched answer)."""
        frame = json.loads(text)
        if frame.get("type") == "accepted" and frame.get("id") == self._frame_id:
            self._event.set()
            return not self.drop
        return True

    def push_frame(self, text: str) -> None:
        if self._passes(text):
            self._conn.push_frame(text)

    def sends_answered(self, answers: list[str]) -> None:
        # The writer answers a connection's sends of a batch in one call (ca30c96).
        kept = [text for text in answers if self._passes(text)]
        self._conn.pending_sends -= len(answers) - len(kept)  # a lost answer still ends its send
        if kept:
            self._conn.sends_answered(kept)


class Answerless(Answered):
    """The same, but that ``accepted`` is dropped (the send is stored and delivered; its
    sender never hears of it)."""

    drop = True


class LoseNextAnswer:
    """Wraps the relay's send handler: the ``accepted`` of ``user``'s next durable send after
    ``arm()`` is lost. ``seen``: (connection, id) of every durable send of ``user`` since."""

    def __init__(self, relay: ThreadedRelay, user: str) -> None:
        self.service = relay.relay.state.delivery
        self.handle = self.service._handle_send
        self.user = user
        self.armed = False
        self.lost = threading.Event()
        self.answered = threading.Event()
        self.lose = ""
        self.seen: list[tuple[DeviceConnection, str]] = []
        self.service._handle_send = self.handle_send  # type: ignore[method-assign]

    def arm(self) -> None:
        self.armed = True

    def handle_send(self, conn: DeviceConnection, frame: SendIn) -> None:
        if conn.device.user != self.user or frame["ephemeral"]:
            self.handle(conn, frame)
            return
        self.seen.append((conn, frame["id"]))
        if self.armed:
            self.armed = False
            self.lose = frame["id"]
            self.handle(Answerless(conn, frame["id"], self.lost), frame)  # type: ignore[arg-type]
            return
        if frame["id"] == self.lose:  # its repeat: answered
            self.handle(Answered(conn, frame["id"], self.answered), frame)  # type: ignore[arg-type]
            return
        self.handle(conn, frame)


def chat(
    context: Any, relay: ThreadedRelay, tmp_path: Path, warm_up: bool = True
) -> tuple[Any, str, Vox]:
    """alice (browser, timers on Playwright's clock) and bob (`vox`), their chat open and (with
    ``warm_up``) a first message sent."""
    context.clock.install()
    alice, bob = unique("alice"), unique("bob")
    vbob = Vox(tmp_path / "bob", relay, bob).register()  # type: ignore[arg-type]
    page = open_app(context, relay)  # type: ignore[arg-type]
    register_in_browser(page, alice)
    open_chat(page, bob)
    if warm_up:
        send_in_browser(page, "warm-up")
        vbob.receive_until(lambda g: any(e.get("text") == "warm-up" for e in g))
    return page, alice, vbob


def send_losing_its_answer(
    page: Any, relay: ThreadedRelay, alice: str, text: str
) -> tuple[LoseNextAnswer, str]:
    """alice sends ``text``; the relay stores it and loses its answer. Returns the loss and the
    message id."""
    lose = LoseNextAnswer(relay, alice)
    lose.arm()
    page.get_by_test_id("composer").fill(text)
    page.get_by_test_id("send").click()
    assert lose.lost.wait(timeout=TIMEOUT_MS / 1000)
    pending = page.locator('[data-testid="message"][data-state="pending"]', has_text=text)
    pending.wait_for()
    return lose, str(pending.get_attribute("data-message-id"))


def longer_than(items: list[str], n: int) -> Callable[[], bool]:
    """A condition for :func:`until`: ``items`` has more than ``n`` entries."""
    return lambda: len(items) > n


def until(page: Any, done: Callable[[], bool], timeout_ms: int = TIMEOUT_MS) -> bool:
    """Wait (letting Playwright dispatch its events) until ``done()``; raises after
    ``TIMEOUT_MS``, returns False after a shorter ``timeout_ms``."""
    for _ in range(timeout_ms // 100):
        if done():
            return True
        page.wait_for_timeout(100)
    if timeout_ms < TIMEOUT_MS:
        return done()
    raise AssertionError("never happened")


def texts(vbob: Vox, last: str) -> list[str]:
    """What bob receives until ``last`` came, and a little after (no duplicate may follow)."""
    got = vbob.receive_until(lambda g: any(e.get("text") == last for e in g))
    got += vbob.receive(wait=2)
    return [str(e["text"]) for e in got if e.get("text")]


def test_a_send_whose_answer_is_lost_goes_out_again_on_a_new_connection_and_arrives_once(
    context: Any, threaded: ThreadedRelay, tmp_path: Path
) -> None:
    page, alice, vbob = chat(context, threaded, tmp_path)
    lose, mid = send_losing_its_answer(page, threaded, alice, "answer lost")
    assert texts(vbob, "answer lost") == [
        "answer lost"
    ]  # stored and delivered: only the answer is lost

    # 30 s without an answer: the connection counts as lost; a new one, the same send again
    # (bob's receipt may mark the message delivered meanwhile: its outbox entry stays until
    # the relay answers it).
    page.clock.fast_forward(ANSWER_TIMEOUT_MS + 1000)
    until(page, lambda: len([cid for _, cid in lose.seen if cid == mid]) == 2)
    again = [conn for conn, cid in lose.seen if cid == mid]
    assert again[0] is not again[1], lose.seen
    assert lose.answered.wait(timeout=TIMEOUT_MS / 1000)
    assert vbob.receive(wait=2) == []  # the relay answered the repeat and stored nothing twice


def test_a_send_failed_across_a_reconnect_resumes_its_conversation_at_once(
    browser: Any, threaded: ThreadedRelay, tmp_path: Path
) -> None:
    """The first message to bob fetches alice's own device list (``GET /v1/accounts/<alice>/
    devices``, under the send lock; typing indicators skip our own devices, so it is this
    message's): that request is held while the relay drops the connection and the page reconnects;
    the next message is typed (its conversation pumped after the reconnect — so is the pump of
    the reconnect itself, held here behind the maintenance request it follows); then the held
    request fails. The page's timers are frozen from the reconnect on: the first message must
    go out again at once, not when the 10 s retry timer would fire."""
    context = browser.new_context(service_workers="block")  # page.route sees every request
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page, alice, vbob = chat(context, threaded, tmp_path, warm_up=False)
        held: dict[str, Any] = {}
        arm_count = threading.Event()

        def hold_own_list(route: Any) -> None:
            if "list" in held:
                route.continue_()
            else:
                held["list"] = route

        def hold_count(route: Any) -> None:
            if arm_count.is_set() and "count" not in held:
                held["count"] = route
            else:
                route.continue_()

        # (Patterns, not Python predicates: a predicate holds every request until Python asks.)
        own_list = re.compile(rf"/v1/accounts/{alice}/devices$")
        page.route(own_list, hold_own_list)
        page.route(re.compile(r"/v1/prekeys/count$"), hold_count)
        page.get_by_test_id("composer").fill("first")
        page.get_by_test_id("send").click()
        until(page, lambda: "list" in held)

        async def drop() -> int:
            sinks = [
                s for s in threaded.relay.state.hub.local_sinks() if isinstance(s, DeviceConnection)
            ]
            for s in sinks:
                s.close(CloseCode.SERVICE_RESTART, "")
            return len(sinks)

        arm_count.set()
        with page.expect_websocket():
            assert threaded.run(drop()) == 1
        wait_online(page)
        until(page, lambda: "count" in held)  # the reconnect's maintenance: its flush waits
        page.clock.pause_at(page.evaluate("Date.now()") / 1000 + 1)  # no timer fires from now on

        page.get_by_test_id("composer").fill("second")
        page.get_by_test_id("send").click()
        page.locator('[data-testid="message"][data-state="pending"]', has_text="second").wait_for()
        held["list"].abort()  # the first attempt fails (unreachable): "retry"
        page.unroute(own_list)
        until(page, lambda: bool(page.evaluate(NOTHING_PENDING)))  # both accepted
        assert texts(vbob, "second") == ["first", "second"]
        held["count"].continue_()
        page.clock.resume()
        page.wait_for_function(NOTHING_PENDING, timeout=TIMEOUT_MS)
    finally:
        context.close()


# Rewrites outbox record ``outbox:<id>`` (sealed: AES-256-GCM under the store's key, the
# record's name as associated data — store.ts) into the shape an older version stored: no
# ``format``, ``attempts`` 0 whether or not it was sent.
OLD_SHAPE = """async (id) => {
  const name = `outbox:${id}`;
  const db = await new Promise((ok, fail) => {
    const r = indexedDB.open("vox-web");
    r.onsuccess = () => ok(r.result);
    r.onerror = () => fail(r.error);
  });
  const get = (store, key) => new Promise((ok, fail) => {
    const r = db.transaction(store).objectStore(store).get(key);
    r.onsuccess = () => ok(r.result);
    r.onerror = () => fail(r.error);
  });
  const key = await get("meta", "key");
  const sealed = await get("kv", name);
  const ad = new TextEncoder().encode(name);
  const plain = await crypto.subtle.decrypt(
    { name: "AES-GCM", iv: sealed.iv, additionalData: ad }, key, sealed.ct);
  const entry = JSON.parse(new TextDecoder().decode(plain));
  const handed = entry.attempts;
  entry.attempts = 0;
  delete entry.format;
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const json = new TextEncoder().encode(JSON.stringify(entry));
  const ct = new Uint8Array(
    await crypto.subtle.encrypt({ name: "AES-GCM", iv, additionalData: ad }, key, json));
  await new Promise((ok, fail) => {
    const tx = db.transaction("kv", "readwrite");
    tx.objectStore("kv").put({ iv, ct }, name);
    tx.oncomplete = ok;
    tx.onerror = () => fail(tx.error);
  });
  db.close();
  return handed;
}"""


def test_an_outbox_record_of_an_older_version_is_not_cancelled_as_unsent(
    context: Any, threaded: ThreadedRelay, tmp_path: Path
) -> None:
    """A message sent by an older version (its answer lost, so still in the outbox, with
    ``attempts`` 0), deleted for everyone after the upgrade before it was answered: it may be
    at the relay (here it is, and bob has it), so the delete must follow it — cancelling it
    as never sent would leave it with bob."""
    page, alice, vbob = chat(context, threaded, tmp_path)
    page.wait_for_function("() => !!navigator.serviceWorker.controller", timeout=TIMEOUT_MS)
    _, mid = send_losing_its_answer(page, threaded, alice, "sent before the upgrade")
    assert texts(vbob, "sent before the upgrade") == ["sent before the upgrade"]
    assert page.evaluate(OLD_SHAPE, mid) == 1  # it was handed; the old shape says 0

    # The upgraded app opens offline (from the service worker's cache) with that record.
    context.set_offline(True)
    page.reload()
    page.wait_for_selector('[data-testid="connection-status"][data-status="offline"]')
    page.get_by_test_id(f"chat-item-{vbob.username}").click()
    message(page, mid).wait_for()
    act(page, mid, "action-delete-everyone")
    page.locator(
        f'[data-testid="message"][data-message-id="{mid}"][data-deleted="true"]'
    ).wait_for()

    context.set_offline(False)
    wait_online(page)
    got = vbob.receive_until(
        lambda g: any(e.get("kind") == "delete" and str(e.get("target")).lower() == mid for e in g)
    )
    assert not [e for e in got if e.get("text")], got  # the message itself came once, before
    page.wait_for_function(NOTHING_PENDING, timeout=TIMEOUT_MS)


def test_a_send_the_relay_cannot_take_now_goes_out_again_after_the_sdk_backoff(
    context: Any, threaded: ThreadedRelay, tmp_path: Path
) -> None:
    """The relay refuses alice's message with busy, internal, then rate_limited, and takes its
    fourth attempt. The page's timers are frozen; after each refusal the clock is moved on 2 s
    (the backoff's cap) at a time, at most 4 times (8 s: less than the old 10 s retry timer),
    until the next attempt arrives. On the old bundle the second attempt never came (the lane
    was held 10 s), and rate_limited failed the message outright."""
    page, alice, vbob = chat(context, threaded, tmp_path)
    service = threaded.relay.state.delivery
    handle = service._handle_send
    refusals = [ErrorCode.BUSY, ErrorCode.INTERNAL, ErrorCode.RATE_LIMITED]
    attempts: list[str] = []

    def handle_send(conn: DeviceConnection, frame: SendIn) -> None:
        if conn.device.user == alice and not frame["ephemeral"]:
            attempts.append(frame["id"])
            if len(attempts) <= len(refusals):
                refusal = FrameError(refusals[len(attempts) - 1], "injected", frame["id"])
                conn.push_frame(DeliveryService.frame_error(refusal))
                return
        handle(conn, frame)

    service._handle_send = handle_send  # type: ignore[method-assign]
    page.clock.pause_at(page.evaluate("Date.now()") / 1000 + 1)  # no timer fires by itself
    page.get_by_test_id("composer").fill("refused thrice")
    page.get_by_test_id("send").click()
    until(page, lambda: len(attempts) == 1)
    for n in range(1, len(refusals) + 1):
        for _ in range(4):
            page.clock.fast_forward(2_000)
            if until(page, longer_than(attempts, n), timeout_ms=TIMEOUT_MS // 4):
                break
        assert len(attempts) == n + 1, f"no attempt {n + 1} within 8 s after refusal {n}"
    assert len(set(attempts)) == 1  # the same client id every time
    page.clock.resume()
    page.wait_for_function(NOTHING_PENDING, timeout=TIMEOUT_MS)
    assert texts(vbob, "refused thrice") == ["refused thrice"]
