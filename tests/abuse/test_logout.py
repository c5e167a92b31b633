"""Finding 8: logout closes the sockets opened with that token at once (4401), on every node."""

from __future__ import annotations

import asyncio
import os
import sys
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from tests.server.relay_harness import TestAccount, auth_header, make_settings, running_relay
from tests.server.ws_kit import Peer, delivery_app, open_ws, setup_accounts, world


async def test_logout_closes_the_socket_opened_with_that_token(tmp_path: Path) -> None:
    async with world(tmp_path, {"alice": [1], "bob": [1]}) as w:
        alice, bob = w["alice", 1], w["bob", 1]
        async with open_ws(w.relay, alice) as ws, w.relay.client() as http:
            resp = await http.delete("/v1/auth/token", headers=auth_header(alice.token))
            assert resp.status_code == 204
            assert await ws.closed(wait=5) == (4401, "token_revoked")
        # The token is dead for a new socket too; bob was not disturbed.
        async with open_ws(w.relay, None) as ws:
            await ws.send({"type": "auth", "token": alice.token})
            assert await ws.closed() == (4401, "token_revoked")
        async with open_ws(w.relay, bob) as ws:
            await ws.send({"type": "ping", "id": "p"})
            await ws.expect("pong")


async def test_logout_of_another_token_leaves_the_device_socket_open(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with (
        running_relay(settings, app=delivery_app(settings)) as relay,
        relay.client() as http,
    ):
        alice = TestAccount.new("alice")
        first = await alice.register_and_login(http)
        second = await alice.login(http)  # e.g. the CLI beside the TUI
        async with open_ws(relay, Peer("alice", 1, first)) as ws:
            resp = await http.delete("/v1/auth/token", headers=auth_header(second))
            assert resp.status_code == 204
            await ws.send({"type": "ping", "id": "still"})
            assert (await ws.expect("pong"))["id"] == "still"


@pytest.mark.postgres
@pytest.mark.redis
async def test_logout_on_one_node_closes_the_socket_on_another(
    tmp_path: Path, postgres_url: str, redis_url: str, redis_prefix: str
) -> None:
    async with AsyncExitStack() as stack:
        relays = []
        for name in ("a", "b"):
            settings = make_settings(
                tmp_path / name,
                database_url=postgres_url,
                redis_url=redis_url,
                redis_prefix=redis_prefix,
            )
            relays.append(
                await stack.enter_async_context(running_relay(settings, app=delivery_app(settings)))
            )
        node_a, node_b = relays
        async with node_a.client() as http:
            peers = await setup_accounts(http, {"alice": [1]})
        alice = peers["alice", 1]
        async with open_ws(node_b, alice) as ws, node_a.client() as http:
            resp = await http.delete("/v1/auth/token", headers=auth_header(alice.token))
            assert resp.status_code == 204
            assert await ws.closed(wait=10) == (4401, "token_revoked")


async def test_an_operator_revoke_without_redis_closes_the_socket(tmp_path: Path) -> None:
    # `vox-relay device revoke` runs in its own process: without Redis no signal reaches the
    # relay, which finds the revoked token when it re-checks its sockets' tokens.
    async with (
        world(tmp_path, {"alice": [1]}, token_check_interval=0.5) as w,
        open_ws(w.relay, w["alice", 1]) as ws,
    ):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "server.cli",
            "device",
            "revoke",
            "alice",
            "1",
            "--data-dir",
            str(w.relay.settings.data_dir),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "VOX_LOG_LEVEL": "warning"},
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, out
        assert await ws.closed(wait=15) == (4401, "token_revoked")
