"""Shared fixtures: real PostgreSQL and Redis when configured, skipped (or failed in CI) otherwise.

* ``VOX_TEST_POSTGRES_URL`` — an SQLAlchemy async URL of a server where the test user may
  ``CREATE DATABASE`` (e.g. ``postgresql+asyncpg://postgres@127.0.0.1:5432/postgres``).
  Every test that asks for ``postgres_url`` gets a brand-new database, dropped afterwards.
* ``VOX_TEST_REDIS_URL`` — e.g. ``redis://127.0.0.1:6379/0``. ``redis_url`` gives it with a
  unique key/channel prefix in ``redis_prefix``.

With ``CI=true`` an unset or unreachable service is a failure, never a skip.

No test leaves a process behind: when a test module is done (its last test torn down, with its
module fixtures), every process this pytest process started since — found as a descendant, or
by the ``PYTEST_VOX_OWNER`` mark in its environment if it was re-parented — is killed. A test
that timed out or failed before its own clean-up ran leaks nothing into the next module.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import psutil
import pytest
from hypothesis import HealthCheck, settings

from tests.logging_state import preserved_logging

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

# Property tests check what is true of every example, never how fast one runs: on a loaded
# 2-core machine an example can take longer than Hypothesis' 200 ms deadline, or its input
# generation can trip the too-slow health check, which failed tests that were correct.
# Loaded here, before any test module builds its own ``@settings``, which inherit this.
settings.register_profile(
    "vox", deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.load_profile("vox")


# Children inherit the mark (the harnesses drop only VOX_* variables), so a process that lost
# its parent can still be told apart from another run's.
OWNER_MARK = "PYTEST_VOX_OWNER"
os.environ[OWNER_MARK] = f"{os.getpid()}-{uuid.uuid4().hex}"
_baseline: set[tuple[int, float]] = set()


def _ident(proc: psutil.Process) -> tuple[int, float]:
    return (proc.pid, proc.create_time())  # pid and start time: a reused pid is another process


def _ours() -> list[psutil.Process]:
    """Live processes this pytest process started: its descendants and marked orphans."""
    me = psutil.Process()
    found = {p.pid: p for p in me.children(recursive=True)}
    mark = os.environ[OWNER_MARK]
    for proc in psutil.process_iter():
        if proc.pid in found or proc.pid == me.pid:
            continue
        try:
            if proc.uids().real == me.uids().real and proc.environ().get(OWNER_MARK) == mark:
                found[proc.pid] = proc
        except (psutil.Error, OSError):
            continue  # gone, or not readable: not ours
    ours = []
    for proc in found.values():
        try:
            if _ident(proc) not in _baseline:
                ours.append(proc)
        except psutil.Error:
            continue
    return ours


def pytest_sessionstart(session: pytest.Session) -> None:
    _baseline.update(_ident(p) for p in psutil.Process().children(recursive=True))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """After a module's last test (module fixtures included) kill what is left of its processes."""
    yield
    if nextitem is not None and nextitem.path == item.path:
        return
    leaked = _ours()
    for proc in leaked:
        try:
            proc.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(leaked, timeout=10)


def _unavailable(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} is required in CI but is not available", pytrace=False)
    pytest.skip(f"{what} not available (set the URL to run this test)")


def _pg_admin_dsn(url: str) -> str:
    # asyncpg wants a plain postgresql:// DSN.
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _pg_execute(dsn: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Every test leaves the logging configuration as it found it (:mod:`tests.logging_state`)."""
    with preserved_logging():
        yield


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database (SQLAlchemy async URL), dropped after the test."""
    base = os.environ.get("VOX_TEST_POSTGRES_URL")
    if not base:
        _unavailable("PostgreSQL (VOX_TEST_POSTGRES_URL)")
        raise AssertionError("unreachable")
    name = f"vox_test_{uuid.uuid4().hex[:16]}"
    admin = _pg_admin_dsn(base)
    try:
        asyncio.run(_pg_execute(admin, f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        _unavailable(f"PostgreSQL at {base} ({exc.__class__.__name__}: {exc})")
    head, _, _ = base.rpartition("/")
    try:
        yield f"{head}/{name}"
    finally:
        asyncio.run(_pg_execute(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The Redis URL (reachability checked); combine with ``redis_prefix`` for isolation."""
    url = os.environ.get("VOX_TEST_REDIS_URL")
    if not url:
        _unavailable("Redis (VOX_TEST_REDIS_URL)")
        raise AssertionError("unreachable")

    async def ping() -> None:
        import redis.asyncio as aioredis

        client = aioredis.from_url(url, socket_connect_timeout=3)
        try:
            await client.ping()
        finally:
            await client.aclose()

    try:
        asyncio.run(ping())
    except Exception as exc:
        _unavailable(f"Redis at {url} ({exc.__class__.__name__}: {exc})")
    yield url


@pytest.fixture
def redis_prefix() -> str:
    """A unique channel/key prefix so concurrent test runs never see each other's traffic."""
    return f"voxtest:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
async def anyio_backend() -> AsyncIterator[str]:  # pragma: no cover - for anyio-marked tests
    yield "asyncio"
