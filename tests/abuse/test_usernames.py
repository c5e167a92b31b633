"""Finding 12 (look-alike usernames): a name that looks like an existing one is refused.

Measured before: ``a1ice`` next to ``alice`` and ``rnallory`` next to ``mallory`` were both
accepted. Now registration compares confusable skeletons (Unicode TR39,
``server.accounts.usernames``)
and answers ``409 username_lookalike``; the skeleton is stored under a unique index, so two
concurrent registrations of look-alikes cannot both succeed on PostgreSQL either.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from server.accounts.usernames import skeleton
from tests.server.relay_harness import TestAccount, make_settings, running_relay


@pytest.mark.parametrize(
    ("name", "looks_like"),
    [
        ("a1ice", "alice"),
        ("rnallory", "mallory"),
        ("b0b", "bob"),
        ("vvill", "will"),
        ("clave", "dave"),
        ("a1ic3", "a1ic3"),
        ("\u0430lice", "alice"),  # Cyrillic а
        ("\u03bfscar", "oscar"),  # Greek ο
        ("al\u0131ce", "alice"),  # dotless ı
        ("I1l|", "llll"),
    ],
)
def test_look_alike_names_have_the_same_skeleton(name: str, looks_like: str) -> None:
    assert skeleton(name) == skeleton(looks_like)


@pytest.mark.parametrize(("a", "b"), [("alice", "alicia"), ("bob", "rob"), ("al-ice", "alice")])
def test_different_names_have_different_skeletons(a: str, b: str) -> None:
    assert skeleton(a) != skeleton(b)


def test_a_skeleton_is_its_own_skeleton() -> None:
    for name in ("mallory", "a1ice", "w0rd_d.m-1"):
        assert skeleton(skeleton(name)) == skeleton(name)


async def _register(http: httpx.AsyncClient, name: str) -> tuple[int, str]:
    """(status, error code) of registering ``name``."""
    resp = await TestAccount.new(name).register(http)
    return resp.status_code, "" if resp.status_code == 201 else resp.json()["error"]


async def _look_alikes_are_refused(tmp_path: Path, database_url: str | None) -> None:
    settings = make_settings(tmp_path, database_url=database_url)
    async with running_relay(settings) as relay, relay.client() as http:
        for name in ("alice", "mallory", "bob", "rnark"):
            assert await _register(http, name) == (201, "")
        for name in ("a1ice", "rnallory", "b0b", "mark"):
            assert await _register(http, name) == (409, "username_lookalike"), name
        assert await _register(http, "alice") == (409, "username_taken")
        assert await _register(http, "alicia") == (201, "")
        # Concurrent registrations of look-alikes: exactly one wins.
        results = await asyncio.gather(*(_register(http, n) for n in ("carol", "caro1", "car0l")))
        assert sorted(code for code, _ in results) == [201, 409, 409]


async def test_look_alike_usernames_are_refused_on_sqlite(tmp_path: Path) -> None:
    await _look_alikes_are_refused(tmp_path, None)


@pytest.mark.postgres
async def test_look_alike_usernames_are_refused_on_postgresql(
    tmp_path: Path, postgres_url: str
) -> None:
    await _look_alikes_are_refused(tmp_path, postgres_url)
