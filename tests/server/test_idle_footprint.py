"""What an idle relay keeps in memory: only what serving needs before the first request.

``cryptography`` (its Rust extension with OpenSSL linked in: about 8 MB resident) serves
signature checks (logins, device lists) and Web Push (the VAPID key is read when first used:
its public key served or a push signed); an idle relay has not loaded it, push on or off.
Checked on a real ``vox-relay serve`` process through ``/proc/<pid>/maps``; the first login,
or the first request for the VAPID key, loads it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from tests.server.relay_harness import TestAccount, free_port, relay_process

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/<pid>/maps")


#: The extension module's path (the data directory's path may contain the word too).
CRYPTOGRAPHY_SO = "cryptography/hazmat/bindings/_rust"


def _mapped(pid: int, needle: str) -> bool:
    return needle in Path(f"/proc/{pid}/maps").read_text()


async def test_an_idle_relay_without_push_has_not_loaded_cryptography_until_a_login(
    tmp_path: Path,
) -> None:
    port = free_port()
    env = {"VOX_DATA_DIR": str(tmp_path), "VOX_LOG_LEVEL": "warning", "VOX_PUSH__ENABLED": "false"}
    async with relay_process(["serve", "--port", str(port)], env=env, port=port) as proc:
        assert not _mapped(proc.pid, CRYPTOGRAPHY_SO), "cryptography loaded by an idle relay"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            await TestAccount.new("alice").register_and_login(http)
        assert _mapped(proc.pid, CRYPTOGRAPHY_SO)


async def test_an_idle_relay_with_push_on_reads_its_vapid_key_only_when_first_asked(
    tmp_path: Path,
) -> None:
    port = free_port()
    env = {"VOX_DATA_DIR": str(tmp_path), "VOX_LOG_LEVEL": "warning"}  # push on (the default)
    key_file = tmp_path / "vapid_private_key.pem"
    async with relay_process(["serve", "--port", str(port)], env=env, port=port) as proc:
        assert not _mapped(proc.pid, CRYPTOGRAPHY_SO), "cryptography loaded by an idle relay"
        assert not key_file.exists()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            config = (await http.get("/v1/config")).json()
            vapid = (await http.get("/v1/push/vapid")).json()
        assert config["push"] == vapid and len(vapid["public_key"]) == 87
        assert key_file.exists()
        assert _mapped(proc.pid, CRYPTOGRAPHY_SO)
