"""A group membership change the relay cannot take now (``busy``, ``rate_limited``,
``internal``, ``shutting_down``) is retried like a send (``Engine.announce``: the SDK's backoff,
0.2 s doubling, with the same client id, 5 attempts in all) instead of failing as "offline";
refused every time, it fails saying what the relay answered, and nothing changes. A browser
user and two `vox` users through a relay in this process whose send handler refuses on cue.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from server.delivery.connection import DeviceConnection
from server.delivery.frames import FrameError, SendIn
from server.delivery.service import DeliveryService
from tests.web.support import TIMEOUT_MS, Vox, open_app, register_in_browser, unique
from tests.web.threaded_relay import ThreadedRelay
from wire.codes import ErrorCode


class Refuse:
    """Wraps the relay's send handler: once armed, ``user``'s durable sends are refused with
    the next code of ``codes`` (then handled); ``ids``: the client id of each attempt."""

    def __init__(self, relay: ThreadedRelay, user: str, codes: list[ErrorCode]) -> None:
        self.service = relay.relay.state.delivery
        self.handle = self.service._handle_send
        self.user, self.codes = user, list(codes)
        self.armed = False
        self.ids: list[str] = []
        self.service._handle_send = self.handle_send  # type: ignore[method-assign]

    def handle_send(self, conn: DeviceConnection, frame: SendIn) -> None:
        if self.armed and conn.device.user == self.user and not frame["ephemeral"]:
            self.ids.append(frame["id"])
            if len(self.ids) <= len(self.codes):
                refusal = FrameError(self.codes[len(self.ids) - 1], "injected", frame["id"])
                conn.push_frame(DeliveryService.frame_error(refusal))
                return
        self.handle(conn, frame)


def group_of_three(context: Any, relay: ThreadedRelay, tmp_path: Path) -> tuple[Any, str, str, Vox]:
    """alice (browser) creates a group with bob; returns the page, alice, bob and carol
    (`vox`, not yet a member)."""
    alice, bob, carol = unique("alice"), unique("bob"), unique("carol")
    Vox(tmp_path / "bob", relay, bob).register()  # type: ignore[arg-type]
    vcarol = Vox(tmp_path / "carol", relay, carol).register()  # type: ignore[arg-type]
    page = open_app(context, relay)  # type: ignore[arg-type]
    register_in_browser(page, alice)
    page.get_by_test_id("group-name").fill(f"team{unique('')}")
    page.get_by_test_id("group-members").fill(bob)
    page.get_by_test_id("group-create").click()
    page.get_by_test_id(f"group-member-{bob}").wait_for()
    return page, alice, bob, vcarol


def test_adding_a_member_the_relay_is_too_busy_for_is_retried(
    context: Any, threaded: ThreadedRelay, tmp_path: Path
) -> None:
    page, alice, _, vcarol = group_of_three(context, threaded, tmp_path)
    refuse = Refuse(threaded, alice, [ErrorCode.BUSY, ErrorCode.RATE_LIMITED, ErrorCode.INTERNAL])
    refuse.armed = True
    page.get_by_test_id("group-add-username").fill(vcarol.username)
    page.get_by_test_id("group-add-submit").click()
    # The old bundle gave up at the first refusal: "offline: changing a group's members ...".
    added = f'[data-testid="group-member-{vcarol.username}"], [data-testid="group-error"]'
    page.locator(added).wait_for(timeout=TIMEOUT_MS)
    error = page.get_by_test_id("group-error")
    assert error.count() == 0, error.inner_text()
    assert len(refuse.ids) == 4 and len(set(refuse.ids)) == 1  # the same client id each time
    vcarol.receive(wait=3)
    assert alice in vcarol.run("group", "list").stdout  # carol was told: she is in


def test_removing_a_member_the_relay_keeps_refusing_says_why(
    context: Any, threaded: ThreadedRelay, tmp_path: Path
) -> None:
    page, alice, member, _ = group_of_three(context, threaded, tmp_path)
    refuse = Refuse(threaded, alice, [ErrorCode.SHUTTING_DOWN] + [ErrorCode.BUSY] * 9)
    refuse.armed = True
    page.get_by_test_id(f"group-remove-{member}").click()
    error = page.get_by_test_id("group-error")
    error.wait_for(timeout=TIMEOUT_MS)
    # The old bundle: "offline: ..." after the first refusal, with the page online.
    assert error.inner_text().startswith("the relay could not take the group change now (busy)")
    assert len(refuse.ids) == 5 and len(set(refuse.ids)) == 1  # 5 attempts, one client id
    assert page.get_by_test_id(f"group-member-{member}").count() == 1  # nothing changed
    status = page.get_by_test_id("connection-status").get_attribute("data-status")
    assert status == "online"
