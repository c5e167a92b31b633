"""A relay that accepts the WebSocket and the ``auth`` frame but never answers ``ready``: the
browser gives up on that socket after ``READY_TIMEOUT_MS`` (10 s, the SDK's ``open_timeout``),
shows why it is offline, and reconnects with its usual backoff (it used to stay "connecting"
for good). The page's sockets go through Playwright's WebSocket routing to the real relay,
which holds back ``ready`` on the first one.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from tests.web.support import (
    RelayProc,
    open_app,
    register_in_browser,
    unique,
    wait_online,
)


def test_a_relay_that_never_answers_ready_is_dropped_and_reconnected(
    context: Any, relay: RelayProc
) -> None:
    page = open_app(context, relay)
    register_in_browser(page, unique("alice"))
    sockets: list[dict[str, Any]] = []
    lock = threading.Lock()

    def route(ws: Any) -> None:
        """The first socket after the reload never sees ``ready``; later ones see everything."""
        server = ws.connect_to_server()
        with lock:
            me: dict[str, Any] = {"held": not sockets, "dropped": None, "auth": False}
            sockets.append(me)

        def from_page(message: str | bytes) -> None:
            if isinstance(message, str) and json.loads(message).get("type") == "auth":
                me["auth"] = True
            server.send(message)

        def from_relay(message: str | bytes) -> None:
            if me["held"] and isinstance(message, str) and '"ready"' in message:
                return
            ws.send(message)

        def page_closed(code: int | None, reason: str | None) -> None:
            me["dropped"] = code
            server.close()

        ws.on_message(from_page)
        server.on_message(from_relay)
        ws.on_close(page_closed)

    page.route_web_socket("**/v1/ws", route)
    page.reload()
    status = '[data-testid="connection-status"]'
    page.wait_for_selector(f'{status}[data-status="offline"][data-reason="no-ready"]')
    assert "did not answer" in page.locator(status).inner_text()
    wait_online(page)
    with lock:
        first, *later = sockets
    # The page sent auth on the silent socket, then closed it itself and made another.
    assert first["auth"] and first["dropped"] is not None, sockets
    assert later and later[-1]["auth"], sockets
