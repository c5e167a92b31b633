"""A REST 401 makes the browser log in again (``protocol-client.md`` §3): the token expired or
was revoked → one challenge/login, the request retried once; a device that may no longer log
in (revoked by the operator, removed from its account) is shown signed out.

The relay runs in this process (uvicorn on loopback, in a thread of its own) on a
:class:`~server.clock.ShiftedClock`, so the test moves the relay's time past the token's
lifetime without sleeping. Its periodic token re-check is pushed out of the test's way so
that the REST request, not the WebSocket, is the first to meet the expired token; the test
then runs that re-check itself.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from server.clock import ShiftedClock
from server.delivery.connection import DeviceConnection
from tests.web.support import (
    TIMEOUT_MS,
    VOX_RELAY,
    Vox,
    clean_env,
    open_app,
    open_chat,
    register_in_browser,
    send_in_browser,
    unique,
    wait_online,
)
from tests.web.threaded_relay import ThreadedRelay
from wire.codes import CloseCode

TOKEN_TTL = 3600


@pytest.fixture
def clock() -> ShiftedClock:
    return ShiftedClock()


@pytest.fixture
def shifted_relay(
    threaded_relays: Callable[..., ThreadedRelay], clock: ShiftedClock
) -> ThreadedRelay:
    # Only the test re-checks the tokens of open sockets (see the module docstring).
    return threaded_relays(
        clock=clock,
        limits={"token_ttl_seconds": TOKEN_TTL},
        overrides={"token_check_interval": 86400.0},
    )


def test_an_expired_token_is_renewed_transparently_and_a_revoked_device_is_signed_out(
    context: Any, shifted_relay: ThreadedRelay, clock: ShiftedClock, tmp_path: Path
) -> None:
    relay = shifted_relay
    page = open_app(context, relay)  # type: ignore[arg-type]
    seen: list[tuple[str, str, int]] = []
    page.on("response", lambda r: seen.append((r.request.method, r.url, r.status)))
    alice, bob = unique("alice"), unique("bob")
    vox = Vox(tmp_path / "bob", relay, bob).register()  # type: ignore[arg-type]
    register_in_browser(page, alice)
    open_chat(page, bob)
    send_in_browser(page, "before the token expires")
    devices = f"{relay.url}/v1/accounts/{alice}/devices"
    token = ("POST", f"{relay.url}/v1/auth/token")

    # The token expires while the page is open and connected.
    clock.advance(TOKEN_TTL)
    start = len(seen)
    page.get_by_test_id("devices-open").click()
    page.get_by_test_id("device-1").wait_for(timeout=TIMEOUT_MS)
    after = seen[start:]
    first_401 = next(i for i, r in enumerate(after) if r[1] == devices and r[2] == 401)
    login = next(i for i, r in enumerate(after) if i > first_401 and r[:2] == token and r[2] == 200)
    assert any(r[1] == devices and r[2] == 200 for r in after[login:]), after
    assert not page.get_by_test_id("devices-panel").locator(".error").count()
    page.get_by_test_id("devices-open").click()  # close the panel

    # The renewed token expires too; the next REST call is a file upload (XHR).
    clock.advance(TOKEN_TTL)
    start = len(seen)
    data = b"uploaded after a transparent re-login"
    page.get_by_test_id("attach-file").set_input_files(
        files=[{"name": "after.txt", "mimeType": "text/plain", "buffer": data}]
    )
    page.wait_for_selector('[data-testid="message"][data-state="sent"] [data-testid="attachment"]')
    # (Whatever the upload's requests — a resumable upload's or the one-shot POST.)
    files = f"{relay.url}/v1/attachments"
    after = [r for r in seen[start:] if r[:2] == token or r[1].startswith(files)]
    assert after[0][1].startswith(files) and after[0][2] == 401, after
    assert after[1][:2] == token and after[1][2] == 200, after
    assert after[-1][2] == 201 and all(r[2] < 400 for r in after[1:]), after
    got = vox.receive_until(lambda g: any(m.get("attachment") for m in g))
    att = next(m["attachment"] for m in got if m.get("attachment"))
    assert Path(att["path"]).read_bytes() == data

    # The relay closes the socket (authenticated with the expired token) with 4401
    # token_revoked, as its token re-check does for a dead token: the page reconnects with
    # the token it already renewed — it is not signed out.
    async def close_socket() -> int:
        sinks = [s for s in relay.relay.state.hub.local_sinks() if isinstance(s, DeviceConnection)]
        for s in sinks:
            s.close(CloseCode.UNAUTHORIZED, "token_revoked")
        return len(sinks)

    logins = sum(r[:2] == token for r in seen)
    with page.expect_websocket(timeout=TIMEOUT_MS):
        assert relay.run(close_socket()) == 1
    wait_online(page)
    assert sum(r[:2] == token for r in seen) == logins

    # The operator revokes the device: the next REST call's 401 leads to a login the relay
    # refuses (403 device_revoked), and the page shows it signed out.
    subprocess.run(
        [
            str(VOX_RELAY),
            "device",
            "revoke",
            alice,
            "1",
            "--data-dir",
            str(relay.settings.data_dir),
        ],
        env=clean_env(),
        check=True,
        capture_output=True,
        timeout=120,
    )
    page.get_by_test_id("devices-open").click()  # close
    page.get_by_test_id("devices-open").click()  # open: the list is fetched again
    page.wait_for_selector(
        '[data-testid="connection-status"][data-status="signed-out"]', timeout=TIMEOUT_MS
    )
