"""``vox-relay`` as an operator runs it: real subprocesses against a real relay process."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.server.relay_harness import (
    TestAccount,
    auth_header,
    free_port,
    make_settings,
    relay_process,
    running_relay,
)

VOX_RELAY = str(Path(sys.executable).with_name("vox-relay"))


async def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run ``vox-relay *args``; return (exit status, stdout, stderr)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("VOX_")}
    full_env.update(env or {})
    proc = await asyncio.create_subprocess_exec(
        VOX_RELAY,
        *args,
        env=full_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_operator_flow_invite_register_revoke_and_stats(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    port = free_port()
    env = {"VOX_REGISTRATION": "invite", "VOX_LOG_JSON": "true"}
    code, out, err = await run_cli("migrate", "--data-dir", data)
    assert code == 0, err
    assert out.startswith("database at revision ")
    assert (os.stat(data).st_mode & 0o777) == 0o700  # token hashes live here
    async with relay_process(
        ["serve", "--port", str(port), "--data-dir", data], env=env, port=port
    ):
        code, out, err = await run_cli(
            "invite", "create", "--uses", "1", "--expires", "1h", "--data-dir", data
        )
        assert code == 0, err
        invite = out.strip()
        assert len(invite) >= 24 and "\n" not in invite
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            config = (await http.get("/v1/config")).json()
            assert config["registration"] == "invite"
            alice = TestAccount.new("alice")
            assert (await alice.register(http)).status_code == 403
            assert (await alice.register(http, invite=invite)).status_code == 201
            assert (await TestAccount.new("bob").register(http, invite=invite)).status_code == 403
            token = await alice.login(http)
            assert (
                await http.get("/v1/prekeys/count", headers=auth_header(token))
            ).status_code == 200

            code, out, err = await run_cli("device", "revoke", "alice", "1", "--data-dir", data)
            assert code == 0, err
            assert "1 token(s) revoked" in out
            resp = await http.get("/v1/prekeys/count", headers=auth_header(token))
            assert resp.status_code == 401 and resp.json()["error"] == "token_revoked"
            ch = await http.post("/v1/auth/challenge", json={"username": "alice", "device_id": 1})
            assert ch.status_code == 403 and ch.json()["error"] == "device_revoked"

        code, out, err = await run_cli("stats", "--data-dir", data)
        assert code == 0, err
        stats = json.loads(out)
        assert stats["accounts"] == 1 and stats["devices"] == 1
        assert stats["active_invites"] == 0  # its single use was consumed
        assert stats["queued_envelopes"] == 0
        assert stats["one_time_prekeys"] == 10


async def test_cli_errors_are_one_clear_line(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    cases = [
        (["migrate", "--config", str(tmp_path / "nope.toml")], "config file not found"),
        (["migrate", "--database-url", "mysql://x"], "invalid setting database_url"),
        (["stats", "--data-dir", data + "-empty"], "no relay schema"),
        (["device", "revoke", "ghost", "3", "--data-dir", data], "no device 3 for user 'ghost'"),
        (
            ["migrate", "--database-url", "postgresql+asyncpg://nobody@127.0.0.1:1/none"],
            "cannot reach the database",
        ),
        (
            ["serve", "--port", "0", "--database-url", "postgresql+asyncpg://x@127.0.0.1:1/none"],
            "cannot reach the database",
        ),
    ]
    env = {"VOX_LIMITS__TOKEN_TTL_SECONDS": "3600"}
    for args, message in cases:
        code, out, err = await run_cli(*args, env=env)
        assert code == 1, (args, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith("vox-relay: error: ") and message in lines[0], lines
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        code, _, err = await run_cli("serve", "--port", port, "--data-dir", data)
    assert code == 1
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(f"vox-relay: error: cannot listen on 127.0.0.1:{port}")
    )
    code, _, err = await run_cli("invite", "create", "--expires", "soon", "--data-dir", data)
    assert code == 2 and "30m, 12h, 7d" in err
    code, _, err = await run_cli("stats", env={"VOX_LIMITS__TOKEN_TTL_SECONDS": "1"})
    assert code == 1 and "token_ttl_seconds" in err


@pytest.mark.redis
async def test_device_revoke_closes_open_connections_through_redis(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    from websockets.asyncio.client import connect

    data = str(tmp_path / "data")
    port = free_port()
    env = {"VOX_REDIS_URL": redis_url, "VOX_REDIS_PREFIX": redis_prefix}
    async with relay_process(
        ["serve", "--port", str(port), "--data-dir", data], env=env, port=port
    ):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            alice = TestAccount.new("alice")
            token = await alice.register_and_login(http)
        async with connect(f"ws://127.0.0.1:{port}/v1/ws", compression=None) as ws:
            await ws.send(json.dumps({"type": "auth", "token": token}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "ready"
            code, out, err = await run_cli(
                "device", "revoke", "alice", "1", "--data-dir", data, env=env
            )
            assert code == 0, err
            assert "open connections were told to close" in out
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code is not None and ws.close_code != 1000


@pytest.mark.timeout(900)  # a dozen CLI processes; the shared machine is slow
async def test_operator_deletes_an_account_unrevokes_a_device_and_manages_invites(
    tmp_path: Path,
) -> None:
    data = str(tmp_path / "data")
    port = free_port()
    env = {"VOX_REGISTRATION": "invite", "VOX_LOG_JSON": "true"}
    code, out, err = await run_cli("--version")
    assert code == 0 and out.startswith("vox-relay ") and out.strip().split()[-1][0].isdigit()
    async with relay_process(
        ["serve", "--port", str(port), "--data-dir", data],
        env=env,
        port=port,
        startup_timeout=300,
    ):
        code, out, err = await run_cli("invite", "create", "--uses", "2", "--data-dir", data)
        assert code == 0, err
        invite = out.strip()
        code, out, err = await run_cli("invite", "list", "--data-dir", data)
        assert code == 0, err
        lines = out.strip().splitlines()
        assert lines[0].split()[:3] == ["ID", "USES", "LEFT"] and len(lines) == 2
        assert lines[1].split()[1] == "2" and lines[1].split()[-1] == "active"
        assert invite not in out  # only hashes are stored
        first_id = lines[1].split()[0]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            alice = TestAccount.new("alice")
            assert (await alice.register(http, invite=invite)).status_code == 201
            token = await alice.login(http)

            code, out, err = await run_cli("device", "unrevoke", "alice", "1", "--data-dir", data)
            assert code == 1 and "not revoked" in err
            code, out, err = await run_cli("device", "revoke", "alice", "1", "--data-dir", data)
            assert code == 0, err
            ch = await http.post("/v1/auth/challenge", json={"username": "alice", "device_id": 1})
            assert ch.status_code == 403
            code, out, err = await run_cli("device", "unrevoke", "alice", "1", "--data-dir", data)
            assert code == 0, err
            assert "may log in again" in out
            token = await alice.login(http)
            assert (
                await http.get("/v1/prekeys/count", headers=auth_header(token))
            ).status_code == 200

            code, out, err = await run_cli("invite", "revoke", first_id, "--data-dir", data)
            assert code == 0, err
            assert (await TestAccount.new("bob").register(http, invite=invite)).status_code == 403

            code, out, err = await run_cli("account", "delete", "alice", "--data-dir", data)
            assert code == 0, err
            assert "deleted account alice: 1 device(s)" in out and "reserved until" in out
            assert (
                await http.get("/v1/prekeys/count", headers=auth_header(token))
            ).status_code == 401
            code, out, err = await run_cli("account", "delete", "alice", "--data-dir", data)
            assert code == 1 and "was deleted" in err
        code, out, err = await run_cli("stats", "--data-dir", data)
        assert json.loads(out)["accounts"] == 0


@pytest.mark.postgres
@pytest.mark.timeout(600)  # several CLI processes on a shared machine
async def test_the_operator_cli_runs_the_services_the_api_runs_on_postgresql(
    tmp_path: Path, postgres_url: str
) -> None:
    """Invites, account deletion and stats by ``vox-relay`` on PostgreSQL: the registration
    the REST API runs honours the CLI's invite, and the CLI's account deletion does what the
    API's does after its commit (the account's blobs leave the disk). Revocation and the
    refusals are the SQLite tests' above."""
    settings = make_settings(tmp_path, database_url=postgres_url, registration="invite")
    where = ["--database-url", postgres_url, "--data-dir", str(settings.data_dir)]
    code, invite, err = await run_cli("invite", "create", "--uses", "1", *where)
    assert code == 0, err
    async with running_relay(settings) as relay, relay.client() as http:
        alice = TestAccount.new("alice")
        token = await alice.register_and_login(http, invite=invite.strip())
        up = await http.post("/v1/attachments", content=b"x" * 3000, headers=auth_header(token))
        assert up.status_code == 201, up.text
        blobs = [p for p in (settings.data_dir / "attachments").rglob("*") if p.is_file()]
        assert len(blobs) == 1

        code, out, err = await run_cli("invite", "list", *where)
        assert code == 0, err
        assert out.splitlines()[1].split()[1:2] == ["0"] and out.rstrip().endswith("used up")

        code, out, err = await run_cli("account", "delete", "alice", *where)
        assert code == 0 and "1 device(s), 1 attachment(s)" in out, err
        assert not any(p.exists() for p in blobs)
        gone = await http.get("/v1/accounts/alice/devices", headers=auth_header(token))
        assert gone.status_code == 401  # its tokens went with it
    code, out, err = await run_cli("stats", *where)
    assert code == 0, err
    assert json.loads(out) == {
        "accounts": 0,
        "active_invites": 0,
        "devices": 0,
        "one_time_prekeys": 0,
        "queued_envelopes": 0,
    }


async def test_serve_is_listed_and_takes_its_options_without_typer() -> None:
    # `serve` is a Click command parsed by the entry point (the serving process never loads
    # Typer); the Typer app lists it and the other commands.
    code, out, err = await run_cli("--help")
    assert code == 0, err
    assert "serve" in out and "migrate" in out and "invite" in out
    code, out, err = await run_cli("serve", "--help")
    assert code == 0, err
    for option in ("--host", "--port", "--data-dir", "--database-url", "--redis-url", "--config"):
        assert option in out
    code, _, err = await run_cli("serve", "--port", "70000")
    assert code == 2 and "--port" in err
