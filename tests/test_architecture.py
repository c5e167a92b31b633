"""Import rules between the top-level packages, checked on the source (ARCHITECTURE.md):

* ``wire/`` (the typed protocol) imports neither side: only pydantic and the standard library;
* the relay never imports ``crypto/`` (it cannot decrypt anything) nor ``clients/``;
* ``crypto/`` imports only ``cryptography`` and the standard library;
* ``clients/`` never imports the relay;
* the client engine's sans-I/O modules (:data:`SANS_IO`) import nothing that does I/O or reads
  a clock: no ``asyncio``, ``socket``, ``time``, ``httpx``, ``websockets``, ...
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STDLIB = set(sys.stdlib_module_names) | {"__future__"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _offenders(package: str, allowed: set[str]) -> dict[str, list[str]]:
    found = {
        str(path.relative_to(REPO)): sorted(_imports(path) - allowed - STDLIB)
        for path in (REPO / package).rglob("*.py")
    }
    return {k: v for k, v in found.items() if v}


@pytest.mark.parametrize(
    ("package", "allowed"),
    [
        ("wire", {"wire", "pydantic", "pydantic_core"}),
        ("crypto", {"crypto", "cryptography"}),
    ],
)
def test_a_core_package_imports_only_what_it_may(package: str, allowed: set[str]) -> None:
    assert _offenders(package, allowed) == {}


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("server", {"crypto", "clients"}), ("clients", {"server"})],
)
def test_the_relay_and_the_clients_never_import_each_other(
    package: str, forbidden: set[str]
) -> None:
    found = {
        str(path.relative_to(REPO)): sorted(_imports(path) & forbidden)
        for path in (REPO / package).rglob("*.py")
    }
    assert {k: v for k, v in found.items() if v} == {}


#: The client engine's decision modules: typed values, ``now`` and an ``rng`` in, decisions out.
SANS_IO = [
    "clients/sdk/engine.py",
    "clients/sdk/sendqueue.py",
    "clients/sdk/groupstate.py",
    "clients/sdk/linkstate.py",
]
#: What they may not import (I/O, clocks, threads, the shell's transport).
IO_MODULES = {
    "asyncio",
    "socket",
    "ssl",
    "select",
    "selectors",
    "time",
    "threading",
    "subprocess",
    "httpx",
    "websockets",
    "sqlite3",
}
#: Nor the SDK modules that do I/O themselves.
IO_SDK_MODULES = {"client", "pipeline", "transport", "group_admin", "linking", "inbox"}


def _sdk_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "clients.sdk":
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("clients.sdk."):
            names.add((node.module or "").split(".")[2])
    return names


@pytest.mark.parametrize("module", SANS_IO)
def test_the_client_engine_does_no_io(module: str) -> None:
    path = REPO / module
    assert sorted(_imports(path) & IO_MODULES) == []
    assert sorted(_sdk_imports(path) & IO_SDK_MODULES) == []


def test_the_client_shell_stays_thin() -> None:
    # Issue 10: VoxClient is the asyncio shell (sockets, HTTP, tasks, the clock) in at most
    # 400 lines; protocol decisions and features live in the engine and the feature modules.
    lines = (REPO / "clients/sdk/client.py").read_text(encoding="utf-8").count("\n")
    assert lines <= 400, f"clients/sdk/client.py has {lines} lines"
