"""A group of a browser user and two `vox` (Python) users: create, sender keys both ways,
add, removal with sender-key rotation (the removed member reads nothing afterwards), leave."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.web.support import (
    RelayProc,
    Vox,
    open_app,
    register_in_browser,
    send_in_browser,
    unique,
    wait_message,
)


def texts(got: list[dict[str, Any]]) -> list[str]:
    return [str(m.get("text")) for m in got if m.get("text") is not None]


def test_a_group_with_python_members_and_a_removal_that_rotates_keys(
    context: Any, relay: RelayProc, tmp_path: Path
) -> None:
    alice, bob, carol = unique("alice"), unique("bob"), unique("carol")
    vbob = Vox(tmp_path / "bob", relay, bob).register()
    vcarol = Vox(tmp_path / "carol", relay, carol).register()
    page = open_app(context, relay)
    register_in_browser(page, alice)
    name = f"team{unique('')}"
    page.get_by_test_id("group-name").fill(name)
    page.get_by_test_id("group-members").fill(f"{bob}, {carol}")
    page.get_by_test_id("group-create").click()
    page.get_by_test_id(f"group-member-{carol}").wait_for()
    # Browser → group: one sender-key message for both Python members.
    send_in_browser(page, "hello group from the browser")
    for vox in (vbob, vcarol):
        got = vox.receive_until(lambda g: "hello group from the browser" in texts(g))
        msg = next(m for m in got if m.get("text") == "hello group from the browser")
        assert msg["from"] == alice and msg.get("group")
    group_id = msg["group"]
    assert name in vbob.run("group", "list").stdout
    # Python → group: the browser receives bob's sender key and his message.
    vbob.run("group", "send", group_id, "bob answers the group")
    wait_message(page, bob, "bob answers the group")
    vcarol.receive_until(lambda g: "bob answers the group" in texts(g))
    # Remove carol from the browser: everyone rotates; carol reads nothing afterwards.
    page.get_by_test_id(f"group-remove-{carol}").click()
    page.get_by_test_id(f"group-member-{carol}").wait_for(state="detached")
    vcarol.receive(wait=3)  # carol processes her removal
    send_in_browser(page, "after carol left")
    vbob.receive_until(lambda g: "after carol left" in texts(g))
    vbob.run("group", "send", group_id, "bob after the removal")
    wait_message(page, bob, "bob after the removal")
    late = vcarol.receive(wait=5)
    assert "after carol left" not in texts(late) and "bob after the removal" not in texts(late)
    assert group_id not in vcarol.run("group", "list").stdout
    # Leaving: bob is told, and the group disappears from the browser's conversation.
    page.get_by_test_id("group-leave").click()
    page.get_by_test_id("no-conversation").wait_for()
    vbob.receive(wait=3)
    members = vbob.run("group", "list").stdout
    assert alice not in members.split(group_id, 1)[-1].splitlines()[0]


def test_a_group_created_by_python_includes_the_browser(
    context: Any, relay: RelayProc, tmp_path: Path
) -> None:
    alice, bob = unique("alice"), unique("bob")
    vbob = Vox(tmp_path / "bob", relay, bob).register()
    page = open_app(context, relay)
    register_in_browser(page, alice)
    name = f"club{unique('')}"
    vbob.run("group", "create", name, alice)
    vbob.run("group", "send", name, "welcome to the club")
    page.get_by_test_id(f"group-item-{name}").click()
    wait_message(page, bob, "welcome to the club")
    page.get_by_test_id(f"group-member-{bob}").wait_for()
    send_in_browser(page, "thanks for having me")
    vbob.receive_until(lambda g: "thanks for having me" in texts(g))
