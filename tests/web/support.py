"""Shared helpers of the browser-client tests: a relay subprocess, the `vox` CLI, waits.

The relay runs as ``vox-relay serve`` (a real process on a free loopback port, its own data
directory) so it can be stopped and started again under a live page; the `vox` CLI runs as
real processes in temporary homes. Everything is synchronous (Playwright's sync API).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.ports import free_port

VOX = Path(sys.executable).with_name("vox")
VOX_RELAY = Path(sys.executable).with_name("vox-relay")
TIMEOUT_MS = 60_000  # generous: a loaded 2-core machine


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without inherited VOX_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOX_")}
    env.update(extra)
    return env


class RelayProc:
    """``vox-relay serve`` on a free port; ``stop()``/``start()`` keep port and data."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.env = clean_env(VOX_LIMITS__REQUESTS_PER_MINUTE_PER_IP="100000", **(env or {}))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"relay-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [str(VOX_RELAY), "serve", "--port", str(self.port), "--data-dir", str(self.data_dir)]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vox-relay exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError("vox-relay did not become healthy")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@contextmanager
def own_relay(tmp_path: Path) -> Iterator[RelayProc]:
    """A relay of the test's own (it may stop and start it), stopped at the end."""
    (tmp_path / "own-relay").mkdir()
    relay = RelayProc(tmp_path / "own-relay" / "vox-data")
    relay.start()
    try:
        yield relay
    finally:
        relay.stop()


class Vox:
    """One `vox` CLI profile (a real process per command)."""

    def __init__(self, home: Path, relay: RelayProc, username: str) -> None:
        self.home = home
        self.relay = relay
        self.username = username

    def run(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            [str(VOX), "--home", str(self.home), *args],
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and r.returncode != 0:
            raise AssertionError(
                f"vox {' '.join(args)}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
            )
        return r

    def register(self) -> Vox:
        self.run("register", self.username, "--server", self.relay.url)
        return self

    def send(self, to: str, text: str) -> str:
        return self.run("send", to, text).stdout.strip()

    def receive(self, wait: float = 3) -> list[dict[str, Any]]:
        out = self.run("receive", "--wait", str(wait), "--json").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def receive_until(
        self, pred: Callable[[list[dict[str, Any]]], bool], within: float = 90
    ) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            got += self.receive(wait=3)
            if pred(got):
                return got
        raise AssertionError(f"{self.username} never received what was expected; got {got}")


def unique(prefix: str) -> str:
    """A fresh username (tests share one relay per module)."""
    return f"{prefix}{int(time.time() * 1000) % 10**9}"


# --- driving the page (data-testid hooks, documented in clients/web/README.md) -----------


def open_app(context: Any, relay: RelayProc) -> Any:
    """A new page on the relay's web app, with browser errors surfaced in the test log."""
    page = context.new_page()
    page.on("pageerror", lambda e: print(f"[pageerror] {e}"))
    page.on(
        "console",
        lambda m: print(f"[console.{m.type}] {m.text}") if m.type in {"error", "warning"} else None,
    )
    page.goto(relay.url + "/")
    return page


def wait_online(page: Any) -> None:
    page.wait_for_selector(
        '[data-testid="connection-status"][data-status="online"]', timeout=TIMEOUT_MS
    )


def register_in_browser(page: Any, username: str) -> None:
    page.get_by_test_id("register-username").fill(username)
    page.get_by_test_id("register-submit").click()
    wait_online(page)


def open_chat(page: Any, username: str) -> None:
    page.get_by_test_id("new-chat-username").fill(username)
    page.get_by_test_id("new-chat-submit").click()
    page.get_by_test_id("conversation-title").filter(has_text=username).wait_for()


def send_in_browser(page: Any, text: str) -> str:
    """Type and send; returns the message id once the relay accepted it."""
    page.get_by_test_id("composer").fill(text)
    page.get_by_test_id("send").click()
    msg = page.locator('[data-testid="message"]', has_text=text).last
    msg.wait_for()
    page.wait_for_function(
        "(t) => [...document.querySelectorAll('[data-testid=message]')].some("
        "m => m.textContent.includes(t) && m.dataset.state !== 'pending')",
        arg=text,
        timeout=TIMEOUT_MS,
    )
    return str(msg.get_attribute("data-message-id"))


def wait_message(page: Any, sender: str, text: str) -> Any:
    loc = page.locator(f'[data-testid="message"][data-from="{sender}"]', has_text=text)
    loc.first.wait_for(timeout=TIMEOUT_MS)
    return loc


def message(page: Any, mid: str) -> Any:
    """The rendered message ``mid``."""
    return page.locator(f'[data-testid="message"][data-message-id="{mid}"]')


def act(page: Any, mid: str, action: str, emoji: str | None = None) -> None:
    """Open a message's actions and pick one (``react-option`` needs the emoji)."""
    m = message(page, mid)
    m.get_by_test_id("message-actions").click()
    target = m.get_by_test_id(action)
    if emoji is not None:
        target = m.locator(f'[data-testid="{action}"][data-emoji="{emoji}"]')
    target.click()


@dataclass
class BrowserChat:
    """A browser user (``me``) with a conversation open with a `vox` user (``peer``)."""

    page: Any
    vox: Vox
    me: str
    peer: str
    first: str  # the id of the first message (browser → vox)


def browser_chatting_with_vox(
    context: Any, relay: RelayProc, homes: Path, prefix: str
) -> BrowserChat:
    """Register a `vox` user and a browser user, open their chat and run the first message
    browser → `vox` (the browser starts the PQXDH session)."""
    me, peer = unique("webalice"), unique(prefix)
    vox = Vox(homes / peer, relay, peer).register()
    page = open_app(context, relay)
    register_in_browser(page, me)
    open_chat(page, peer)
    first = send_in_browser(page, f"hi {peer}")
    vox.receive_until(lambda g: any(m.get("text") == f"hi {peer}" for m in g))
    return BrowserChat(page, vox, me, peer, first)


def stored_blobs(relay: RelayProc) -> set[str]:
    """The attachments the relay stores (``<data>/attachments/<xx>/<id>``)."""
    root = relay.data_dir / "attachments"
    return {
        p.name for p in root.glob("*/*") if p.is_file() and p.parent.name not in {"tmp", "uploads"}
    }


def wait_blob_gone(page: Any, relay: RelayProc, blob: str) -> None:
    """Wait (polling the relay's store while the page runs) until ``blob`` left the relay."""
    for _ in range(TIMEOUT_MS // 100):
        if blob not in stored_blobs(relay):
            return
        page.wait_for_timeout(100)
    assert blob not in stored_blobs(relay), "the blob is still on the relay"


# --- the test kit (clients/web/testkit/testkit.js: the protocol core and the engine) -------

KIT = Path(__file__).resolve().parents[2] / "clients" / "web" / "testkit" / "testkit.js"
#: An origin nothing listens on, intercepted: a secure context for WebCrypto, no server.
KIT_ORIGIN = "http://127.0.0.1:9"


@contextmanager
def kit_page(browser: Any) -> Iterator[Any]:
    """A page of its own context with the test kit loaded (``window.voxTestkit``)."""
    ctx = browser.new_context()
    ctx.set_default_timeout(120_000)
    ctx.route(f"{KIT_ORIGIN}/**", lambda route: route.fulfill(body="", content_type="text/html"))
    try:
        yield kit_on(ctx, KIT_ORIGIN)
    finally:
        ctx.close()


def kit_on(context: Any, origin: str) -> Any:
    """A page at ``origin`` with the test kit injected. On a relay the page is the relay's own
    ``/healthz`` (so Chromium treats it as a loopback page that may open WebSockets to
    loopback; a page fulfilled by Playwright may not)."""
    page = context.new_page()
    page.on("pageerror", lambda e: print(f"[pageerror] {e}"))
    page.goto(f"{origin}/healthz")
    page.add_script_tag(content=KIT.read_text(), type="module")
    page.wait_for_function("() => !!window.voxTestkit")
    return page


def kit_call(page: Any, name: str, *args: Any) -> Any:
    """``window.voxTestkit[name](...args)``, awaited."""
    return page.evaluate("([n, a]) => window.voxTestkit[n](...a)", [name, list(args)])
