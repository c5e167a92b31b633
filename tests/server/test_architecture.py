"""Layering rules of the relay, checked on the source: it never imports ``crypto/``; routes
hold no SQL; nothing reads settings or opens an engine at import time."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.server.relay_harness import REPO

SERVER = REPO / "server"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_relay_never_imports_the_protocol_core() -> None:
    offenders = {
        str(path.relative_to(REPO)): sorted(
            n for n in _imports(path) if n.split(".")[0] == "crypto"
        )
        for path in SERVER.rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_core_routes_contain_no_sql() -> None:
    for path in (SERVER / "api").glob("*.py"):
        sql = {n for n in _imports(path) if n.split(".")[0] == "sqlalchemy"}
        # ops.py's /readyz runs "SELECT 1" as its database probe; nothing else touches SQL.
        assert sql <= ({"sqlalchemy"} if path.name == "ops.py" else set()), (path, sql)


def test_importing_the_app_reads_no_settings_and_opens_no_database(tmp_path: Path) -> None:
    code = (
        "import os, sys\n"
        "os.environ['VOX_DATABASE_URL'] = 'not-a-url'\n"
        "os.environ['VOX_CONFIG'] = '/nonexistent.toml'\n"
        "import server.app, server.cli, server.deps\n"
        "assert 'alembic' not in sys.modules, 'alembic imported by the app'\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
