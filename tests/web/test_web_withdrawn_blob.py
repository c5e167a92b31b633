"""A file message the browser withdraws while the relay is unreachable still loses its blob on
the relay (``DELETE /v1/attachments/{id}``, protocol-ws §9.2; ``Engine.deleteWithdrawn``):
deleted for everyone, once its queued DELETE goes out; withdrawn before it was sent, on the
next connection — from the same page, or from the page opened again (the blob id is kept in
the encrypted store). A real relay process stopped (and the browser offline) during the
delete, started again afterwards; a `vox` peer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.web.support import (
    TIMEOUT_MS,
    RelayProc,
    Vox,
    act,
    message,
    open_app,
    open_chat,
    own_relay,
    register_in_browser,
    stored_blobs,
    unique,
    wait_blob_gone,
    wait_online,
)

FILE = {"name": "plan.bin", "mimeType": "application/octet-stream", "buffer": b"p" * 5000}


def _go_offline(context: Any, page: Any, relay: RelayProc) -> None:
    """The browser has no network and the relay process is gone."""
    context.set_offline(True)
    relay.stop()
    page.wait_for_selector(
        '[data-testid="connection-status"]:not([data-status="online"])', timeout=TIMEOUT_MS
    )


def _back(context: Any, page: Any, relay: RelayProc, reopen: bool) -> Any:
    """The relay and the network come back; with ``reopen`` the page is opened anew (it was
    closed while offline: only the store remembers). Returns the page, online."""
    if reopen:
        page.close()
    relay.start()
    context.set_offline(False)
    if reopen:
        page = open_app(context, relay)
    wait_online(page)
    return page


@pytest.mark.parametrize("reopen", [False, True], ids=["same-page", "reloaded"])
def test_a_file_deleted_for_everyone_while_the_relay_is_down_loses_its_blob_later(
    context: Any, tmp_path: Path, reopen: bool
) -> None:
    with own_relay(tmp_path) as relay:
        alice, bob = unique("webalice"), unique("bob")
        vox = Vox(tmp_path / "bob", relay, bob).register()
        page = open_app(context, relay)
        register_in_browser(page, alice)
        open_chat(page, bob)
        page.get_by_test_id("attach-file").set_input_files(files=[FILE])
        sent = page.locator(
            '[data-testid="message"][data-state="sent"]', has=page.get_by_test_id("attachment")
        )
        sent.wait_for()
        mid = str(sent.get_attribute("data-message-id"))
        vox.receive_until(lambda g: any(m.get("attachment") for m in g))
        [blob] = stored_blobs(relay)

        _go_offline(context, page, relay)
        act(page, mid, "action-delete-everyone")
        message(page, mid).get_by_test_id("tombstone").wait_for(timeout=TIMEOUT_MS)
        page.wait_for_selector('[data-testid="queued"][data-count="1"]', timeout=TIMEOUT_MS)
        assert blob in stored_blobs(relay)  # the relay was down: its store still holds the blob

        page = _back(context, page, relay, reopen)
        vox.receive_until(
            lambda g: any(
                e.get("kind") == "delete" and str(e.get("target")).lower() == mid for e in g
            )
        )
        wait_blob_gone(page, relay, blob)


@pytest.mark.parametrize("action", ["action-delete-me", "action-delete-everyone"])
def test_a_queued_file_message_withdrawn_while_the_relay_is_down_loses_its_blob_later(
    context: Any, tmp_path: Path, action: str
) -> None:
    """The file is uploaded but its message stays queued (the page's WebSocket is refused);
    then the relay is down when the message is withdrawn: the page opened again deletes the
    blob on its first connection."""
    with own_relay(tmp_path) as relay:
        alice, bob = unique("webalice"), unique("bob")
        Vox(tmp_path / "bob", relay, bob).register()
        page = open_app(context, relay)
        register_in_browser(page, alice)
        open_chat(page, bob)
        page.close()
        sockets = {"refused": True}

        def socket(ws: Any) -> None:
            if sockets["refused"]:
                ws.close()
            else:
                ws.connect_to_server()

        context.route_web_socket("**/v1/ws", socket)
        page = open_app(context, relay)
        page.get_by_test_id(f"chat-item-{bob}").click()
        page.get_by_test_id("attach-file").set_input_files(files=[FILE])
        queued = page.locator(
            '[data-testid="message"][data-state="pending"]', has=page.get_by_test_id("attachment")
        )
        queued.wait_for(timeout=TIMEOUT_MS)
        mid = str(queued.get_attribute("data-message-id"))
        [blob] = stored_blobs(relay)

        _go_offline(context, page, relay)
        act(page, mid, action)
        message(page, mid).wait_for(state="detached", timeout=TIMEOUT_MS)
        assert page.get_by_test_id("withdrawn").inner_text() == (
            "withdrawn before sending: it reached no one"
        )
        assert blob in stored_blobs(relay)
        sockets["refused"] = False
        page = _back(context, page, relay, reopen=True)
        wait_blob_gone(page, relay, blob)
