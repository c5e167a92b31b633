"""What an idle relay keeps in memory: only what serving needs before the first request.

``cryptography`` (its Rust extension with OpenSSL linked in: about 8 MB resident) serves
signature checks (logins, device lists) and Web Push (the VAPID key is read when first used:
its public key served or a push signed); an idle relay has not loaded it, push on or off.
Checked on a real ``vox-relay serve`` process through ``/proc/<pid>/maps``; the first login,
or the first request for the VAPID key, loads it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.edge.serve import GC_YOUNG_THRESHOLD, release_free_heap
from tests.server.relay_harness import REPO, TestAccount, free_port, relay_process

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


#: Loaded by nothing that serves: Alembic and Mako (migrations run in a child process), Typer
#: (``serve`` is parsed with Click; the operator's commands are ``server.ops.cli``), what
#: ``server.cli.BLOCKED_MODULES`` blocks (Pydantic 1's API, uvicorn's reload watcher,
#: Starlette's form parser), the clients and their crypto, Textual, pydantic-settings and
#: python-dotenv (``server.settings`` reads ``VOX_*`` itself), prometheus_client and the HTTP
#: server, WSGI and gzip modules its exposition imports (``server.metrics`` is the relay's own).
NOT_SERVING = (
    "alembic",
    "mako",
    "typer",
    "server.ops.cli",
    "pydantic.v1",
    "watchfiles",
    "python_multipart",
    "multipart",
    "cryptography",
    "clients",
    "crypto",
    "textual",
    "pydantic_settings",
    "dotenv",
    "prometheus_client",
    "wsgiref",
    "http.server",
    "gzip",
)

#: Runs ``vox-relay serve`` through its console-script entry point up to the moment it
#: would serve (startup done, the lifespans entered), prints the loaded modules (a blocked
#: one is ``None`` in ``sys.modules``), the collector's state and what each call of
#: ``release_free_heap`` returned, and stops. uvicorn's ``Server.main_loop`` and
#: ``server.edge.serve.release_free_heap`` are patched as their modules load (importing
#: either here first would load what serve blocks).
_SERVE_AND_LIST_MODULES = """
import importlib.machinery, json, sys

trims = []

async def main_loop(self):
    import gc
    names = sorted(n for n, m in sys.modules.items() if m is not None)
    frozen, threshold = gc.get_freeze_count(), gc.get_threshold()
    state = {"modules": names, "frozen": frozen, "threshold": threshold, "trims": trims}
    print(json.dumps(state), flush=True)

def patch_server(module):
    module.Server.main_loop = main_loop

def patch_serve(module):
    release = getattr(module, "release_free_heap", None)
    if release is not None:
        module.release_free_heap = lambda: trims.append(release()) or trims[-1]

PATCHES = {"uvicorn.server": patch_server, "server.edge.serve": patch_serve}

class Patch:
    def find_spec(self, name, path, target=None):
        patch = PATCHES.pop(name, None)
        if patch is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        exec_module = spec.loader.exec_module

        def patched(module):
            exec_module(module)
            patch(module)

        spec.loader.exec_module = patched
        return spec

sys.meta_path.insert(0, Patch())
from server.cli import main

sys.argv = ["vox-relay", "serve", "--port", sys.argv[1]]
main()
"""


@pytest.fixture(scope="module")
def serving_state(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One ``vox-relay serve`` run up to the moment it would serve (shared by the tests)."""
    tmp_path = tmp_path_factory.mktemp("serving")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOX_")}
    env.update({"VOX_DATA_DIR": str(tmp_path), "VOX_LOG_LEVEL": "warning"})
    out = subprocess.run(
        [sys.executable, "-c", _SERVE_AND_LIST_MODULES, str(free_port())],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    ).stdout
    state: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return state


def test_the_serving_process_loads_only_what_serving_needs(serving_state: dict[str, Any]) -> None:
    modules = set(serving_state["modules"])
    assert "server.delivery.writer" in modules  # it did build and start the app
    loaded = sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in NOT_SERVING))
    assert loaded == []


def test_the_serving_process_freezes_start_up_and_collects_the_young_generation_less_often(
    serving_state: dict[str, Any],
) -> None:
    """Start-up's objects are out of the collector's walks; young collections are rarer.

    Under load, a relay with Python's defaults collected every ~700 allocations and, now and
    then, walked all ~100,000 objects start-up left (a pause of tens of milliseconds in which
    no frame was read). ``serving_gc`` runs last in the lifespan of ``vox-relay serve``.
    """
    assert serving_state["frozen"] > 50_000  # modules, routes, mappers, the open engine
    assert serving_state["threshold"][0] == GC_YOUNG_THRESHOLD


def test_the_serving_process_gives_the_free_heap_start_up_left_back_to_the_kernel(
    serving_state: dict[str, Any],
) -> None:
    """``malloc_trim(0)`` once, after the freeze (glibc kept ~1 MB of freed chunks resident).

    Where the C library has no ``malloc_trim`` the call does nothing and says so (False).
    """
    assert serving_state["trims"] == [release_free_heap()]
