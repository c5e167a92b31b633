"""Linking the browser as a new device of an account whose first device is a `vox` profile.

`vox link` shows a code; the browser redeems it (scrypt-derived temporary key, encrypted
offer through the relay, its own keys on device list v+2), then receives what is sent to the
account and what the CLI device sends (transcripts), and sends as that account. A wrong code
is refused with a clear error; logging out wipes the browser's data.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.web.support import (
    VOX,
    RelayProc,
    Vox,
    clean_env,
    open_app,
    register_in_browser,
    send_in_browser,
    unique,
    wait_message,
    wait_online,
)


def start_link(vox: Vox) -> tuple[subprocess.Popen[bytes], str]:
    """`vox link` in the background; returns the process and the code it shows."""
    proc = subprocess.Popen(
        [str(VOX), "--home", str(vox.home), "link", "--wait", "240"],
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    shown = b""
    deadline = time.monotonic() + 120
    while b"\n" not in shown and time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            shown += chunk
    m = re.search(rb"vox join (\S+) --server", shown)
    assert m is not None, shown
    return proc, m.group(1).decode()


def test_the_browser_links_to_a_vox_account_receives_transcripts_and_sends_as_it(
    context: Any, relay: RelayProc, tmp_path: Path
) -> None:
    alice, carol = unique("alice"), unique("carol")
    cli = Vox(tmp_path / "alice", relay, alice).register()
    friend = Vox(tmp_path / "carol", relay, carol).register()
    cli.send(carol, "before the browser")
    friend.receive_until(lambda g: any(m.get("text") == "before the browser" for m in g))
    proc, code = start_link(cli)
    try:
        page = open_app(context, relay)
        page.get_by_test_id("mode-link").click()
        page.get_by_test_id("link-code").fill(code)
        page.get_by_test_id("link-submit").click()
        wait_online(page)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        device = int(code.split(":")[1])
        assert f"linked device {device}" in out.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert page.get_by_test_id("me").inner_text() == alice
    # Sent to the account: both devices receive it.
    friend.send(alice, "hello alice, on every device")
    page.get_by_test_id(f"chat-item-{carol}").click()
    wait_message(page, carol, "hello alice, on every device")
    # Sent by the CLI device: the browser gets the transcript, in the conversation with carol.
    cli.send(carol, "typed in the terminal")
    wait_message(page, alice, "typed in the terminal")
    # Sent from the browser as alice: carol receives it from alice; the CLI gets a transcript.
    send_in_browser(page, "typed in the browser")
    got = friend.receive_until(lambda g: any(m.get("text") == "typed in the browser" for m in g))
    assert [m["from"] for m in got if m.get("text") == "typed in the browser"] == [alice]
    mine = cli.receive_until(lambda g: any(m.get("text") == "typed in the browser" for m in g))
    assert any(
        m.get("conversation") == carol for m in mine if m.get("text") == "typed in the browser"
    )
    # The devices panel lists both devices; `vox devices` agrees.
    page.get_by_test_id("devices-open").click()
    page.get_by_test_id(f"device-{device}").wait_for()
    page.get_by_test_id("device-1").wait_for()
    assert str(device) in cli.run("devices").stdout
    # Log out wipes the local data: a reload shows the welcome screen again.
    page.get_by_test_id("logout").click()
    page.get_by_test_id("register-username").wait_for()
    page.reload()
    page.get_by_test_id("register-username").wait_for()


def test_a_wrong_link_code_is_refused_with_a_clear_error(context: Any, relay: RelayProc) -> None:
    page = open_app(context, relay)
    page.get_by_test_id("mode-link").click()
    page.get_by_test_id("link-code").fill("nobody:4242:AAAA-BBBB-CCCC-DDDD")
    page.get_by_test_id("link-submit").click()
    error = page.get_by_test_id("link-error")
    error.wait_for()
    assert "not valid" in error.inner_text()
    page.get_by_test_id("link-code").fill("not a code")
    page.get_by_test_id("link-submit").click()
    page.get_by_test_id("link-error").filter(has_text="malformed").wait_for()
    # Nothing was stored: the page still offers registration and linking.
    page.reload()
    page.get_by_test_id("mode-link").wait_for()


def test_the_browser_shows_a_link_code_and_qr_that_vox_join_redeems(
    context: Any, relay: RelayProc, tmp_path: Path
) -> None:
    alice, bob = unique("alice"), unique("bob")
    friend = Vox(tmp_path / "bob", relay, bob).register()
    page = open_app(context, relay)
    register_in_browser(page, alice)
    page.get_by_test_id("devices-open").click()
    page.get_by_test_id("link-new-device").click()
    code = page.get_by_test_id("link-new-code").inner_text()
    assert re.fullmatch(rf"{alice}:\d+:[A-Z2-7]{{4}}(-[A-Z2-7]{{4}}){{3}}", code), code
    assert page.get_by_test_id("link-qr").get_attribute("src").startswith("data:image/")
    laptop = Vox(tmp_path / "alice-laptop", relay, alice)
    out = laptop.run("join", code, "--server", relay.url).stdout
    device = int(code.split(":")[1])
    assert f"joined as {alice} device {device}" in out
    page.get_by_test_id("link-new-status").filter(has_text=f"linked device {device}").wait_for()
    page.get_by_test_id(f"device-{device}").wait_for()
    # The new CLI device is a full device of the account: it gets what the browser sends.
    page.get_by_test_id("devices-open").click()
    page.get_by_test_id("new-chat-username").fill(bob)
    page.get_by_test_id("new-chat-submit").click()
    send_in_browser(page, "sent from the browser, seen on the laptop")
    got = laptop.receive_until(
        lambda g: any(m.get("text") == "sent from the browser, seen on the laptop" for m in g)
    )
    assert any(m.get("conversation") == bob for m in got)
    friend.receive_until(
        lambda g: any(m.get("text") == "sent from the browser, seen on the laptop" for m in g)
    )
