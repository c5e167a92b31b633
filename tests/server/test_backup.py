"""``vox-relay backup`` / ``restore`` actually restore: a real relay process takes sends for an
offline device and an attachment, is backed up while it runs, its data is wiped, the backup
is restored, and the restarted relay delivers the queued messages and serves the blob.
SQLite (online backup API) and PostgreSQL (pg_dump / pg_restore, when on PATH)."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.server.cluster import node_ws
from tests.server.relay_harness import REPO, auth_header, free_port, relay_process
from tests.server.ws_kit import setup_accounts

VOX_RELAY = str(Path(sys.executable).with_name("vox-relay"))


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [VOX_RELAY, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )


async def _backup_wipe_restore(tmp_path: Path, env: dict[str, str], wipe: object) -> None:
    data = Path(env["VOX_DATA_DIR"])
    port = free_port()
    blob = b"opaque encrypted attachment bytes" * 100
    async with relay_process(
        ["serve", "--port", str(port)], env=env, port=port, startup_timeout=120
    ):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            peers = await setup_accounts(http, {"alice": [1], "bob": [1]})
            alice, bob = peers["alice", 1], peers["bob", 1]
            up = await http.post("/v1/attachments", content=blob, headers=auth_header(alice.token))
            assert up.status_code == 201, up.text
            attachment = up.json()["id"]
        a = await node_ws(port, alice)
        for i in range(3):  # bob is offline: the envelopes stay queued
            await a.send_message(f"m{i}", [(f"queued {i}".encode(), [bob])])
            await a.expect("accepted")
        await a.ws.close()
        # Online backup, while the relay runs.
        made = await asyncio.to_thread(_cli, "backup", str(tmp_path / "backup"), env=env)
        assert made.returncode == 0, made.stderr
    manifest = json.loads((tmp_path / "backup" / "manifest.json").read_text())
    assert manifest["attachment_files"] >= 1

    shutil.rmtree(data)  # the disaster
    await asyncio.to_thread(wipe)  # type: ignore[arg-type]
    restored = await asyncio.to_thread(_cli, "restore", str(tmp_path / "backup"), env=env)
    assert restored.returncode == 0, restored.stderr

    port = free_port()
    async with relay_process(
        ["serve", "--port", str(port)], env=env, port=port, startup_timeout=120
    ):
        b = await node_ws(port, bob)
        got = [await b.expect("deliver", wait=15) for _ in range(3)]
        assert [base64.b64decode(d["data"]).decode() for d in got] == [
            f"queued {i}" for i in range(3)
        ]
        await b.ws.close()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            down = await http.get(f"/v1/attachments/{attachment}", headers=auth_header(bob.token))
            assert down.status_code == 200
            assert down.content == blob


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"VOX_DATA_DIR": str(tmp_path / "vox-data"), "VOX_LOG_LEVEL": "warning", **extra}


async def test_sqlite_backup_wipe_restore_delivers_the_queued_messages(tmp_path: Path) -> None:
    await _backup_wipe_restore(tmp_path, _env(tmp_path), lambda: None)


async def test_restore_refuses_to_overwrite_a_sqlite_database_without_force(
    tmp_path: Path,
) -> None:
    env = _env(tmp_path)
    assert _cli("migrate", env=env).returncode == 0
    made = _cli("backup", str(tmp_path / "b"), env=env)
    assert made.returncode == 0, made.stderr
    refused = _cli("restore", str(tmp_path / "b"), env=env)
    assert refused.returncode == 1
    assert "--force" in refused.stderr
    assert _cli("restore", "--force", str(tmp_path / "b"), env=env).returncode == 0
    again = _cli("backup", str(tmp_path / "b"), env=env)  # never into a used directory
    assert again.returncode == 1 and "not empty" in again.stderr


@pytest.mark.postgres
@pytest.mark.skipif(shutil.which("pg_dump") is None, reason="needs pg_dump/pg_restore")
async def test_postgresql_backup_wipe_restore_delivers_the_queued_messages(
    tmp_path: Path, postgres_url: str
) -> None:
    def wipe() -> None:
        libpq = postgres_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        subprocess.run(
            ["psql", libpq, "-c", "DROP SCHEMA public CASCADE; CREATE SCHEMA public;"],
            check=True,
            capture_output=True,
        )

    env = _env(tmp_path, VOX_DATABASE_URL=postgres_url)
    await _backup_wipe_restore(tmp_path, env, wipe)
