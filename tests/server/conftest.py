"""Fixtures most relay tests share: a relay on embedded SQLite with default settings and an
HTTP client for it. A test module that needs other settings defines its own ``relay``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.server.relay_harness import Relay, make_settings, running_relay


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    async with running_relay(make_settings(tmp_path)) as r:
        yield r


@pytest.fixture
async def http(relay: Relay) -> AsyncIterator[httpx.AsyncClient]:
    async with relay.client() as client:
        yield client
