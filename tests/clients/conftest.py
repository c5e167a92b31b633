"""Fixtures for client tests: a real relay on loopback and SDK clients in temporary homes."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from clients.sdk import VoxClient
from tests.server.relay_harness import Relay, make_settings, running_relay

Factory = Callable[[str], Awaitable[VoxClient]]


@pytest.fixture(params=["sqlite", "postgres"])
def relay_database(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    """SQLite always; PostgreSQL when ``VOX_TEST_POSTGRES_URL`` is set (mandatory in CI)."""
    if request.param == "sqlite":
        return None
    if not os.environ.get("VOX_TEST_POSTGRES_URL") and os.environ.get("CI", "") != "true":
        pytest.skip("PostgreSQL not configured")
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    """A relay on SQLite in ``tmp_path`` (modules may override it with :func:`both_databases`)."""
    settings = make_settings(tmp_path)
    async with running_relay(settings) as r:
        yield r


@pytest.fixture
async def relay_on_both(relay_database: str | None, tmp_path: Path) -> AsyncIterator[Relay]:
    """A relay on SQLite, and (second parameter) on PostgreSQL."""
    settings = make_settings(tmp_path, database_url=relay_database)
    async with running_relay(settings) as r:
        yield r


@pytest.fixture
async def make_client(relay: Relay, tmp_path: Path) -> AsyncIterator[Factory]:
    """``await make_client("alice")`` registers a profile in ``tmp_path/alice``; all are closed."""
    async for factory in _factory(relay, tmp_path):
        yield factory


@pytest.fixture
async def make_client_on_both(relay_on_both: Relay, tmp_path: Path) -> AsyncIterator[Factory]:
    """Like ``make_client``, on SQLite and (second parameter) on PostgreSQL."""
    async for factory in _factory(relay_on_both, tmp_path):
        yield factory


async def _factory(relay: Relay, tmp_path: Path) -> AsyncIterator[Factory]:
    clients: list[VoxClient] = []

    async def make(username: str) -> VoxClient:
        client = await VoxClient.register(tmp_path / username, relay.base_url, username)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()
