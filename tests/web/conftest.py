"""Fixtures of the browser-client tests: real Chromium (Debian's), real relay, real `vox`.

Chromium comes from the system (``apt-get install chromium``; ``.ci/run`` installs it) and is
driven with Playwright for Python (``executable_path``): Playwright's own browser download is
not used. Without Chromium or Playwright these tests skip with the reason; with ``CI=true``
they fail instead. One browser per test module; every test gets a fresh browser context
(its own IndexedDB), and a module shares one relay where it can.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.web.support import TIMEOUT_MS, RelayProc
from tests.web.threaded_relay import ThreadedRelay

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
CHROMIUM = os.environ.get("VOX_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def _unavailable(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} is required in CI but is not available", pytrace=False)
    pytest.skip(f"{what} not available (apt-get install chromium; pip install playwright)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless system Chromium for the module."""
    if not Path(CHROMIUM).exists():
        _unavailable(f"Chromium ({CHROMIUM})")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright for Python")
        raise
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProc]:
    """One relay subprocess (SQLite) shared by a module's tests."""
    r = RelayProc(tmp_path_factory.mktemp("relay") / "vox-data")
    r.start()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture
def threaded_relays(tmp_path: Path) -> Iterator[Callable[..., ThreadedRelay]]:
    """Makes relays in the test's own process (``ThreadedRelay``: keyword arguments ``clock``,
    ``limits``, ``overrides``), each in its own directory; all closed after the test."""
    made: list[ThreadedRelay] = []

    def make(**kwargs: Any) -> ThreadedRelay:
        made.append(ThreadedRelay(tmp_path / f"threaded-{len(made)}", **kwargs))
        return made[-1]

    try:
        yield make
    finally:
        for r in reversed(made):
            r.close()


@pytest.fixture
def threaded(threaded_relays: Callable[..., ThreadedRelay]) -> ThreadedRelay:
    """One relay in the test's own process, for tests that reach into it (see threaded_relay.py)."""
    return threaded_relays()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    """A fresh browser context (own storage) for one test."""
    ctx = browser.new_context()
    ctx.set_default_timeout(TIMEOUT_MS)
    try:
        yield ctx
    finally:
        ctx.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Browser tests drive several real processes on a loaded machine: 10 minutes each."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.timeout(600))
