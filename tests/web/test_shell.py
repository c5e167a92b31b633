"""The relay serves the browser client at / with strict security headers and the brand.

Whitelabel: with ``VOX_BRAND__NAME=AcmeChat`` and colours set, the page title, the header
and the colours follow, with no rebuild. Screenshots of the main screens in a dark and a
light brand are written to ``docs/web-*.png`` when ``VOX_WEB_SCREENSHOTS=1`` (to the test's
temporary directory otherwise, so a test run never changes the checkout).
"""

from __future__ import annotations

import gzip
import os
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.web.routes import DIST
from tests.web.support import (
    RelayProc,
    Vox,
    open_app,
    open_chat,
    register_in_browser,
    send_in_browser,
    unique,
    wait_message,
)

ROOT = Path(__file__).resolve().parents[2]


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def test_the_relay_serves_the_app_at_root_with_strict_security_headers(relay: RelayProc) -> None:
    status, headers, body = _get(relay.url + "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'<script type="module" src="/app.js"></script>' in body
    assert b"<title>Vox</title>" in body
    csp = headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"  # no inline script, no eval
    assert directives["frame-ancestors"] == "'none'"
    assert directives["connect-src"].split() == [
        "'self'",
        f"ws://127.0.0.1:{relay.port}",
        f"wss://127.0.0.1:{relay.port}",
    ]
    assert "unsafe" not in csp and "http" not in directives["img-src"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    for name, kind in [
        ("app.js", "text/javascript"),
        ("app.css", "text/css"),
        ("sw.js", "text/javascript"),
    ]:
        status, headers, _ = _get(f"{relay.url}/{name}")
        assert status == 200 and headers["content-type"].startswith(kind)
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
    status, _, body = _get(relay.url + "/not-a-file.js")
    assert status == 404 and b'"error"' in body


def test_the_bundle_is_package_data_and_the_shell_is_under_300_kb_gzipped() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "web/dist/*" in pyproject["tool"]["setuptools"]["package-data"]["clients"]
    assert DIST == ROOT / "clients" / "web" / "dist"
    shell = sum(
        len(gzip.compress((DIST / n).read_bytes())) for n in ("index.html", "app.js", "app.css")
    )
    assert shell <= 300 * 1024, shell


def test_no_request_leaves_the_relay_origin(context: Any, relay: RelayProc) -> None:
    origins: set[str] = set()
    context.on("request", lambda r: origins.add("/".join(r.url.split("/")[:3])))
    page = open_app(context, relay)
    register_in_browser(page, unique("origin"))
    assert origins == {relay.url}, origins


@pytest.fixture(scope="module")
def acme(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProc]:
    r = RelayProc(
        tmp_path_factory.mktemp("acme") / "vox-data",
        env={
            "VOX_BRAND__NAME": "AcmeChat",
            "VOX_BRAND__PRIMARY_COLOR": "#e11d48",
            "VOX_BRAND__ACCENT_COLOR": "#f59e0b",
            "VOX_BRAND__BACKGROUND_COLOR": "#111827",
            "VOX_BRAND__WELCOME_TEXT": "Welcome to AcmeChat, Acme's private messenger.",
        },
    )
    r.start()
    try:
        yield r
    finally:
        r.stop()


def _shots_dir(tmp_path: Path) -> Path:
    return ROOT / "docs" if os.environ.get("VOX_WEB_SCREENSHOTS") == "1" else tmp_path


def test_whitelabel_title_header_and_colours_follow_the_settings(
    context: Any, acme: RelayProc, tmp_path: Path
) -> None:
    page = open_app(context, acme)
    page.get_by_test_id("brand-name").wait_for()
    assert page.title() == "AcmeChat"
    assert page.get_by_test_id("brand-name").inner_text() == "AcmeChat"
    assert "Acme's private messenger" in page.get_by_test_id("welcome-text").inner_text()
    primary = page.evaluate(
        "getComputedStyle(document.documentElement).getPropertyValue('--primary')"
    )
    assert primary.strip() == "#e11d48"
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(17, 24, 39)"
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    shots = _shots_dir(tmp_path)
    page.set_viewport_size({"width": 1100, "height": 700})
    page.screenshot(path=str(shots / "web-welcome-dark.png"))
    alice, bob = unique("alice"), unique("bob")
    vox = Vox(tmp_path / "bob", acme, bob).register()
    register_in_browser(page, alice)
    header_border = page.evaluate(
        "getComputedStyle(document.querySelector('.top')).borderBottomColor"
    )
    assert header_border == "rgb(225, 29, 72)"
    assert page.title() == "AcmeChat"
    open_chat(page, bob)
    hi = send_in_browser(page, "Hi Bob, this is the AcmeChat web app.")
    vox.receive_until(lambda got: any(m.get("id") == hi for m in got))
    # The screenshot shows a reply (its quote) and a reaction, sent from the terminal.
    vox.run("send", alice, "Hello from the terminal!", "--reply-to", hi)
    wait_message(page, bob, "Hello from the terminal!")
    page.get_by_test_id("reply-quote").wait_for()
    vox.run("react", alice, hi, "👍")
    page.get_by_test_id("reaction").wait_for()
    page.screenshot(path=str(shots / "web-chat-dark.png"))


def test_a_light_brand_and_a_phone_sized_screen(
    browser: Any, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    light = RelayProc(
        tmp_path_factory.mktemp("light") / "vox-data",
        env={
            "VOX_BRAND__NAME": "AcmeChat",
            "VOX_BRAND__PRIMARY_COLOR": "#0f766e",
            "VOX_BRAND__BACKGROUND_COLOR": "#f8fafc",
        },
    )
    light.start()
    ctx = browser.new_context(viewport={"width": 390, "height": 780}, is_mobile=True)
    ctx.set_default_timeout(60_000)
    try:
        page = open_app(ctx, light)
        page.get_by_test_id("brand-name").wait_for()
        assert page.evaluate("document.documentElement.dataset.theme") == "light"
        shots = _shots_dir(tmp_path)
        page.screenshot(path=str(shots / "web-welcome-light-phone.png"))
        alice, bob = unique("alice"), unique("bob")
        vox = Vox(tmp_path / "bob", light, bob).register()
        register_in_browser(page, alice)
        # Phone layout: the chat list fills the screen; opening a chat replaces it.
        assert page.get_by_test_id("new-chat-username").is_visible()
        open_chat(page, bob)
        assert not page.get_by_test_id("new-chat-username").is_visible()
        send_in_browser(page, "Sent from a phone-sized screen")
        vox.send(alice, "Looks good on a phone")
        wait_message(page, bob, "Looks good on a phone")
        page.screenshot(path=str(shots / "web-chat-light-phone.png"))
        page.get_by_test_id("back").click()
        assert page.get_by_test_id("new-chat-username").is_visible()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390  # nothing overflows sideways
    finally:
        ctx.close()
        light.stop()
