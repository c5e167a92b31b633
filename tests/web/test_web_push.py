"""Web Push in the browser, as far as headless Chromium goes.

What headless Chromium cannot do: ``PushManager.subscribe`` needs the browser's push service
(FCM), which is not reachable — it is refused in a browser context ("permission denied",
contexts are incognito) and never settles in a persistent profile — and nothing can click a
shown notification. So:

* the subscription step is replaced **at the browser API boundary**: an init script swaps
  ``PushManager.prototype.subscribe``/``getSubscription`` for a stand-in whose endpoint is the
  tests' local push service (``tests/server/push_receiver.py``) and whose keys are a P-256 key
  pair held by the test; everything after it (the app's REST registration, the relay's push,
  its VAPID JWT and RFC 8291 encryption) is real;
* the push event is real: the payload the local push service decrypted is handed to the
  service worker with the DevTools Protocol's ``ServiceWorker.deliverPushMessage``, and the
  notification it shows is read back with ``registration.getNotifications()``;
* the ``notificationclick`` handler's choice (focus which window, or open ``/``) runs in
  Chromium through the test kit against stand-in clients (``src/notify.ts``).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server.push_receiver import PushReceiver, push_receiver_thread
from tests.web.support import (
    KIT_ORIGIN,
    RelayProc,
    Vox,
    kit_call,
    kit_page,
    open_app,
    register_in_browser,
    unique,
    wait_message,
    wait_online,
)

PAYLOAD = '{"v":1,"type":"new_messages"}'

#: The stand-in for the browser's push service at the PushManager boundary. The subscription
#: (endpoint + keys, from the test) is "held" while localStorage says so, like a real one
#: survives reloads; calls are recorded in window.__push.
FAKE_PUSH = """
(() => {
  const SUB = %s;
  const HELD = "vox-test-push-subscription";
  const b64u = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf)))
    .replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "");
  window.__push = { subscribes: [], unsubscribes: 0, permissionRequests: 0 };
  const subscription = () => ({
    endpoint: SUB.endpoint,
    expirationTime: null,
    toJSON: () => ({ endpoint: SUB.endpoint, expirationTime: null, keys: SUB.keys }),
    unsubscribe: async () => {
      localStorage.removeItem(HELD);
      window.__push.unsubscribes++;
      return true;
    },
  });
  PushManager.prototype.getSubscription = async function () {
    return localStorage.getItem(HELD) ? subscription() : null;
  };
  PushManager.prototype.subscribe = async function (options) {
    window.__push.subscribes.push({
      userVisibleOnly: options.userVisibleOnly,
      applicationServerKey: b64u(options.applicationServerKey),
    });
    localStorage.setItem(HELD, "1");
    return subscription();
  };
  const request = Notification.requestPermission.bind(Notification);
  Notification.requestPermission = (...args) => {
    window.__push.permissionRequests++;
    return request(...args);
  };
})();
"""


@pytest.fixture
def push_relay(tmp_path: Path) -> Iterator[tuple[RelayProc, PushReceiver]]:
    """A relay (brand AcmeChat) with Web Push on and loopback endpoints allowed, and the
    local push service it may send to."""
    with push_receiver_thread() as rx:
        (tmp_path / "relay").mkdir()
        relay = RelayProc(
            tmp_path / "relay" / "vox-data",
            env={"VOX_BRAND__NAME": "AcmeChat", "VOX_PUSH__ALLOW_LOOPBACK_ENDPOINTS": "true"},
        )
        relay.start()
        try:
            yield relay, rx
        finally:
            relay.stop()
        assert rx.errors == []


def fake_push(context: Any, rx: PushReceiver, name: str) -> dict[str, Any]:
    """Install the PushManager stand-in for subscription ``name`` of the local push service."""
    sub = rx.subscription(name)
    context.add_init_script(FAKE_PUSH % json.dumps(sub))
    return sub


def stored_subscriptions(relay: RelayProc) -> list[tuple[str, bytes, bytes]]:
    """The relay's push_subscriptions rows (endpoint, p256dh, auth), read from its SQLite file."""
    with sqlite3.connect(relay.data_dir / "relay.sqlite3") as db:
        rows = db.execute("SELECT endpoint, p256dh, auth FROM push_subscriptions").fetchall()
    return [(str(e), bytes(p), bytes(a)) for e, p, a in rows]


def wait_until(check: Any, what: str, within: float = 60) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def push_session(page: Any, origin: str) -> tuple[Any, str]:
    """A DevTools session (ServiceWorker domain on) and the id it gives the service worker
    registration of ``origin``."""
    cdp = page.context.new_cdp_session(page)
    found: list[str] = []

    def updated(event: dict[str, Any]) -> None:
        for r in event["registrations"]:
            if r["scopeURL"] == origin + "/" and not r["isDeleted"]:
                found.append(r["registrationId"])

    cdp.on("ServiceWorker.workerRegistrationUpdated", updated)
    cdp.send("ServiceWorker.enable")
    deadline = time.monotonic() + 30
    while not found:
        assert time.monotonic() < deadline, "no service worker registration"
        page.wait_for_timeout(100)
    return cdp, found[-1]


def worker_notifications(context: Any) -> list[dict[str, Any]]:
    """The notifications the service worker shows (``registration.getNotifications()`` run in
    the worker itself, so reading them makes no request and opens no window)."""
    for worker in reversed(context.service_workers):
        try:
            got: list[dict[str, Any]] = worker.evaluate(
                "registration.getNotifications().then(ns => ns.map(n =>"
                " ({title: n.title, body: n.body, tag: n.tag, icon: n.icon, data: n.data})))"
            )
            return got
        except Exception:  # a worker stopped since; try the next (newer) one
            continue
    return []


def test_a_push_reaches_the_closed_app_as_a_content_free_notification(
    browser: Any, push_relay: tuple[RelayProc, PushReceiver], tmp_path: Path
) -> None:
    relay, rx = push_relay
    alice, bob = unique("alice"), unique("bob")
    vbob = Vox(tmp_path / "bob", relay, bob).register()
    ctx = browser.new_context()
    ctx.set_default_timeout(60_000)
    try:
        ctx.grant_permissions(["notifications"], origin=relay.url)
        sub = fake_push(ctx, rx, "alice")
        requests: list[Any] = []
        ctx.on("request", lambda r: requests.append(r))
        page = open_app(ctx, relay)
        register_in_browser(page, alice)
        # Permission is granted, so the chat screen subscribes with the relay's VAPID key and
        # registers endpoint + keys over the REST API.
        wait_until(lambda: stored_subscriptions(relay), "the relay to store the subscription")
        vapid = page.evaluate(
            "fetch('/v1/config').then(r => r.json()).then(c => c.push.public_key)"
        )
        assert page.evaluate("window.__push.subscribes") == [
            {"userVisibleOnly": True, "applicationServerKey": vapid}
        ]
        posts = [
            r
            for r in requests
            if r.method == "POST" and r.url == f"{relay.url}/v1/push/subscriptions"
        ]
        assert [p.post_data_json for p in posts] == [sub]
        assert posts[0].response().status == 201
        assert stored_subscriptions(relay) == [
            (sub["endpoint"], rx.agents["alice"].public_key, rx.agents["alice"].auth)
        ]
        assert page.evaluate("window.__push.permissionRequests") == 0  # granted before: not asked

        # The app closes (a blank tab stays for the DevTools session): alice is offline.
        blank = ctx.new_page()
        page.close()
        vbob.send(alice, "secret words from bob")
        # The relay pushed to the local push service, which checked the VAPID JWT and
        # decrypted the RFC 8291 body: the fixed payload, nothing about bob or the text.
        push = wait_until(lambda: rx.pushes("alice"), "a push")[0]
        assert push.body.decode() == PAYLOAD
        assert push.status == 201

        # That payload, delivered to the service worker as the browser's push service would.
        cdp, rid = push_session(blank, relay.url)
        before = len(requests)
        notes: list[dict[str, Any]] = []
        for _ in range(4):
            # Under load a push handed over while Chromium is still stopping the closed app's
            # worker was seen to vanish (once in a CI run); DevTools' delivery has no retry of
            # its own, so hand it over again (the tag makes repeats one notification).
            cdp.send(
                "ServiceWorker.deliverPushMessage",
                {"origin": relay.url, "registrationId": rid, "data": push.body.decode()},
            )
            with contextlib.suppress(AssertionError):
                notes = wait_until(lambda: worker_notifications(ctx), "the notification", 15)
                break
        assert notes, "no notification after four pushes"
        assert [(n["title"], n["body"], n["tag"]) for n in notes] == [
            ("AcmeChat", "New message", "vox-new-messages")
        ]
        # Showing it fetched nothing: no request at all since the push, by anyone (the icon
        # is a data: URL inside sw.js).
        assert [r.url for r in requests[before:]] == []
        assert notes[0]["icon"].startswith("data:image/svg+xml;base64,")
        assert bob not in json.dumps(notes) and "secret" not in json.dumps(notes)

        # Opening the app shows bob's message; logging out removes the subscription from the
        # relay (REST) and from the browser's push service (unsubscribe).
        page = open_app(ctx, relay)
        wait_online(page)
        page.get_by_test_id(f"chat-item-{bob}").click()
        wait_message(page, bob, "secret words from bob")
        with page.expect_response(
            lambda r: r.request.method == "DELETE" and r.url == f"{relay.url}/v1/push/subscriptions"
        ) as deleted:
            page.get_by_test_id("logout").click()
        assert deleted.value.status == 204
        page.get_by_test_id("register-username").wait_for()
        assert stored_subscriptions(relay) == []
        assert page.evaluate("localStorage.getItem('vox-test-push-subscription')") is None
    finally:
        ctx.close()


def test_notifications_are_asked_for_only_after_a_click_then_push_is_registered(
    browser: Any, push_relay: tuple[RelayProc, PushReceiver]
) -> None:
    relay, rx = push_relay
    ctx = browser.new_context()
    ctx.set_default_timeout(60_000)
    try:
        fake_push(ctx, rx, "carol")
        page = open_app(ctx, relay)
        register_in_browser(page, unique("carol"))
        button = page.get_by_test_id("notifications-enable")
        button.wait_for()
        # Nothing asked, nothing subscribed on load.
        assert page.evaluate("window.__push") == {
            "subscribes": [],
            "unsubscribes": 0,
            "permissionRequests": 0,
        }
        assert stored_subscriptions(relay) == []
        ctx.grant_permissions(["notifications"], origin=relay.url)  # the user says yes
        button.click()
        wait_until(lambda: stored_subscriptions(relay), "the relay to store the subscription")
        assert page.evaluate("window.__push.permissionRequests") == 1
        assert len(page.evaluate("window.__push.subscribes")) == 1
    finally:
        ctx.close()


def test_a_notification_click_focuses_the_app_or_opens_it(browser: Any) -> None:
    origin = KIT_ORIGIN
    with kit_page(browser) as kit:
        hidden = {"url": f"{origin}/", "focused": False, "visibilityState": "hidden"}
        visible = {"url": f"{origin}/?x", "focused": False, "visibilityState": "visible"}
        other = {"url": "http://127.0.0.2:9/", "focused": True, "visibilityState": "visible"}
        got = kit_call(kit, "swHandlers", origin, [other, hidden, visible])
        # another origin's window is never chosen; a visible window of ours beats a hidden one
        assert got["click"] == f"focused {origin}/?x"
        assert got["calls"] == [f"focus {origin}/?x"]
        assert got["note"]["title"] == "AcmeChat"  # no window of ours has the focus
        focused = {"url": f"{origin}/", "focused": True, "visibilityState": "visible"}
        got = kit_call(kit, "swHandlers", origin, [visible, focused])
        assert got["note"] is None  # the focused app notifies by itself (test_app.py)
        assert got["calls"] == [f"focus {origin}/"]
        got = kit_call(kit, "swHandlers", origin, [hidden])
        assert got["calls"] == [f"focus {origin}/"]
        assert got["note"]["options"]["body"] == "New message"
        assert got["note"]["options"]["tag"] == "vox-new-messages"
        got = kit_call(kit, "swHandlers", origin, [])
        assert got["calls"] == ["open /"]
