"""Rate limits shared through Redis: two relay apps on loopback, one PostgreSQL database and
one Redis, enforce the *combined* rate; without a reachable Redis each process still limits
on its own (and never fails a request because of Redis)."""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from server.ratelimit import SharedRateLimiter
from tests.server.relay_harness import (
    Relay,
    TestAccount,
    auth_header,
    free_port,
    make_settings,
    running_relay,
)

CHALLENGE = {"username": "nobody", "device_id": 1}


async def _two_nodes(
    stack: AsyncExitStack, tmp_path: Path, database_url: str | None, **overrides: Any
) -> list[Relay]:
    nodes = []
    for i in range(2):
        settings = make_settings(tmp_path / f"node{i}", database_url=database_url, **overrides)
        nodes.append(
            await stack.enter_async_context(
                running_relay(settings, run_migrations=database_url is None or i == 0)
            )
        )
    return nodes


@pytest.mark.postgres
@pytest.mark.redis
async def test_two_nodes_sharing_redis_enforce_the_combined_rate(
    tmp_path: Path, postgres_url: str, redis_url: str, redis_prefix: str
) -> None:
    limits = {
        "requests_per_minute_per_ip": 30,
        "bundle_fetches_per_minute_per_device": 4,
        # Above the 40 challenges below, but low enough that its Redis bucket lives ~40 s: at
        # the harness's 100,000 a minute it expired within a second, before the key check.
        "challenges_per_minute_per_address": 60,
    }
    async with AsyncExitStack() as stack:
        a, b = await _two_nodes(
            stack,
            tmp_path,
            postgres_url,
            redis_url=redis_url,
            redis_prefix=redis_prefix,
            limits=limits,
        )
        assert isinstance(a.state.limiters.ip, SharedRateLimiter)
        http_a = await stack.enter_async_context(a.client())
        http_b = await stack.enter_async_context(b.client())
        started = time.monotonic()
        # Per device: 4 bundle fetches a minute, whichever node serves them.
        bob = TestAccount.new("bob")
        assert (await bob.register(http_a, one_time=0, one_time_pq=0)).status_code == 201
        token = await TestAccount.new("alice").register_and_login(http_b)
        codes = []
        for http in (http_a, http_b, http_a, http_b, http_a, http_b):
            resp = await http.get("/v1/prekeys/bob", headers=auth_header(token))
            codes.append(resp.status_code)
        assert codes == [200, 200, 200, 200, 429, 429]
        # Per IP: 30 a minute in total, not 30 on each node. 10 requests were made (4 to
        # register and log in, 6 bundle fetches); the bucket refills by 0.5 a second.
        codes = []
        for i in range(40):
            resp = await (http_a if i % 2 else http_b).post("/v1/auth/challenge", json=CHALLENGE)
            codes.append(resp.status_code)
            if resp.status_code == 429:
                assert resp.json()["error"] == "rate_limited"
                assert 1 <= int(resp.headers["retry-after"]) <= 3
        elapsed = time.monotonic() - started
        allowed = codes.count(404)
        assert set(codes) == {404, 429} and codes[:20] == [404] * 20, codes
        # Per-process buckets would have let all 40 through (26 + 24 tokens left).
        assert allowed <= 20 + int(elapsed * 0.5) + 1, (allowed, elapsed, codes)
        # The buckets live in Redis under the configured prefix, and expire.
        redis = a.state.redis
        keys = sorted(k.decode() for k in await redis.keys(f"{redis_prefix}rl:*"))
        assert keys == [
            f"{redis_prefix}rl:bundle:{_pk(keys)}",
            f"{redis_prefix}rl:challenge:127.0.0.1",
            f"{redis_prefix}rl:ip:127.0.0.1",
        ]
        assert 0 < await redis.pttl(f"{redis_prefix}rl:ip:127.0.0.1") <= 61_000
        await redis.delete(*keys)


def _pk(keys: list[str]) -> str:
    return next(k.rsplit(":", 1)[1] for k in keys if ":rl:bundle:" in k)


async def test_without_a_reachable_redis_each_process_limits_on_its_own(
    tmp_path: Path,
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    settings = make_settings(tmp_path, redis_url=dead, limits={"requests_per_minute_per_ip": 5})
    async with running_relay(settings) as relay, relay.client() as http:
        assert isinstance(relay.state.limiters.ip, SharedRateLimiter)
        codes = [
            (await http.post("/v1/auth/challenge", json=CHALLENGE)).status_code for _ in range(7)
        ]
        assert codes == [404] * 5 + [429] * 2
