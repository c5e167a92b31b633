"""The app opens without the relay: the service worker (``clients/web/src/sw.ts``) keeps the
app shell and the last ``/v1/config`` in a cache named after the bundle's hash, answers from it
only when the network fails, and never for another origin. Driven in Chromium with the browser
offline (``context.set_offline``) *and* the relay stopped.
"""

from __future__ import annotations

import hashlib
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
)

DIST = Path(__file__).resolve().parents[2] / "clients" / "web" / "dist"


def _shell_version() -> str:
    """What build.mjs names the cache after: SHA-256 of the shell files, 16 hex digits."""
    h = hashlib.sha256()
    for name in ("index.html", "app.js", "app.css", "icon.svg"):
        h.update((DIST / name).read_bytes())
    return h.hexdigest()[:16]


def _cached(page: Any) -> dict[str, list[str]]:
    return dict(
        page.evaluate(
            """async () => {
                const out = {};
                for (const name of await caches.keys()) {
                    out[name] = (await (await caches.open(name)).keys()).map(r => r.url);
                }
                return out;
            }"""
        )
    )


def test_the_app_opens_offline_from_the_cached_shell_and_sends_queued_messages_later(
    context: Any, tmp_path: Path
) -> None:
    with own_relay(tmp_path) as relay:
        alice, bob = unique("webalice"), unique("bob")
        vox = Vox(tmp_path / "bob", relay, bob).register()
        page = open_app(context, relay)
        register_in_browser(page, alice)
        open_chat(page, bob)
        send_in_browser(page, "while online")
        # The worker was registered on load (no permission prompt) and controls the page.
        page.wait_for_function("() => !!navigator.serviceWorker.controller", timeout=TIMEOUT_MS)
        page.wait_for_function(
            "async () => (await caches.keys()).some(n => n.startsWith('vox-shell-'))",
            timeout=TIMEOUT_MS,
        )
        cached = _cached(page)
        shell = f"vox-shell-{_shell_version()}"
        assert shell in cached, cached
        origin = relay.url
        assert sorted(cached[shell]) == sorted(
            f"{origin}{p}" for p in ("/", "/app.js", "/app.css", "/icon.svg")
        )
        # Nothing from another origin is ever cached.
        assert all(u.startswith(origin + "/") for urls in cached.values() for u in urls)

        # Offline: the browser has no network and the relay is gone.
        context.set_offline(True)
        relay.stop()
        page.reload()
        page.wait_for_selector(
            '[data-testid="connection-status"][data-status="offline"]', timeout=TIMEOUT_MS
        )
        page.get_by_test_id(f"chat-item-{bob}").click()
        page.locator('[data-testid="message"]', has_text="while online").wait_for()
        page.get_by_test_id("composer").fill("queued offline")
        page.get_by_test_id("send").click()
        page.wait_for_selector('[data-testid="message"][data-state="pending"]', timeout=TIMEOUT_MS)

        # Back online: the queued message goes out once.
        relay.start()
        context.set_offline(False)
        page.wait_for_selector(
            '[data-testid="connection-status"][data-status="online"]', timeout=TIMEOUT_MS
        )
        page.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid=message]')]"
            ".every(m => m.dataset.state !== 'pending')",
            timeout=TIMEOUT_MS,
        )
        got = vox.receive_until(lambda g: any(m.get("text") == "queued offline" for m in g))
        assert [m.get("text") for m in got].count("queued offline") == 1


def test_online_the_relays_answers_are_used_not_the_cache(context: Any, relay: RelayProc) -> None:
    page = open_app(context, relay)
    page.wait_for_function("() => !!navigator.serviceWorker.controller", timeout=TIMEOUT_MS)
    # The worker answers /v1/config from the network while the relay is up (fresh limits),
    # and leaves the API alone: a request the cache never held still reaches the relay.
    status = page.evaluate("async () => (await fetch('/v1/config')).status")
    assert status == 200
    assert page.evaluate("async () => (await fetch('/healthz')).status") == 200
    cached = _cached(page)
    assert cached.get("vox-config") == [f"{relay.url}/v1/config"]
    assert not any("/healthz" in u for urls in cached.values() for u in urls)
