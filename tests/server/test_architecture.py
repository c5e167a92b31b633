"""Layout and layering rules of the relay, checked on the source (``docs/architecture.md``).

The relay is laid out by domain: ``server/<domain>/{routes,service,repository}.py`` plus a
small core of shared modules at the top of ``server/``. The rules:

* the relay never imports ``crypto/`` (nor ``clients/``: ``tests/test_architecture.py``);
* only the core modules listed below sit loose in ``server/``; everything else is in a domain;
* routes hold no SQL and never reach a repository directly (they call the domain's service);
* repositories and services know nothing of HTTP (no FastAPI / Starlette), and no module
  imports another domain's routes (only ``server.app`` mounts them);
* nothing reads settings or opens an engine at import time.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server.relay_harness import REPO

SERVER = REPO / "server"

CORE = {
    "__init__.py",
    "app.py",  # the app factory: mounts every domain's routes
    "cli.py",  # vox-relay
    "clock.py",
    "deps.py",  # Annotated dependencies shared by routes
    "diskguard.py",
    "errors.py",
    "logs.py",
    "metrics.py",
    "notify.py",  # DeviceNotifier: how services reach a connected device
    "openapi.py",
    "ratelimit.py",
    "settings.py",
    "state.py",  # RelayState: what the layers share (app.state.relay)
}
"""The relay's core; a new module goes into its domain's package instead."""

DOMAINS = ("accounts", "auth", "prekeys", "delivery", "attachments", "push", "ops")


def _imports(path: Path) -> set[str]:
    """Every module (and ``module.name``) a file imports."""
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _where(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_the_relay_never_imports_the_protocol_core() -> None:
    offenders = {
        _where(path): sorted(n for n in _imports(path) if n.split(".")[0] == "crypto")
        for path in SERVER.rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_only_the_core_sits_loose_in_server() -> None:
    loose = {p.name for p in SERVER.glob("*.py")}
    assert loose - CORE == set(), "put a new module into its domain package (server/<domain>/)"


@pytest.mark.parametrize("domain", DOMAINS)
def test_every_domain_has_routes_and_a_service(domain: str) -> None:
    package = SERVER / domain
    assert (package / "__init__.py").is_file()
    assert (package / "routes.py").is_file()
    if domain != "ops":  # config and health: nothing but routes
        assert (package / "service.py").is_file()


def test_routes_hold_no_sql_and_never_reach_a_repository() -> None:
    offenders = {}
    for path in SERVER.rglob("routes.py"):
        bad = {
            n
            for n in _imports(path)
            if n.split(".")[0] == "sqlalchemy" or ".repository" in n or n.endswith(".invites")
        }
        # ops' /readyz runs "SELECT 1" as its database probe; nothing else touches SQL.
        if path.parent.name == "ops":
            bad -= {"sqlalchemy", "sqlalchemy.text"}
        if bad:
            offenders[_where(path)] = sorted(bad)
    assert offenders == {}


def test_services_and_repositories_know_nothing_of_http() -> None:
    offenders = {}
    for name in ("service.py", "repository.py"):
        for path in SERVER.rglob(name):
            bad = {
                n
                for n in _imports(path)
                if n.split(".")[0] in {"fastapi", "starlette"} or n.endswith(".routes")
            }
            if bad:
                offenders[_where(path)] = sorted(bad)
    assert offenders == {}


def test_only_the_app_mounts_routes() -> None:
    offenders = {}
    for path in SERVER.rglob("*.py"):
        if path == SERVER / "app.py":
            continue
        own = path.relative_to(SERVER).parts[0]
        bad = {
            n
            for n in _imports(path)
            if n.startswith("server.") and n.endswith(".routes") and n.split(".")[1] != own
        }
        if bad:
            offenders[_where(path)] = sorted(bad)
    assert offenders == {}


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


#: Functions that read the system's time (``time.X`` / ``datetime.X`` / ``date.X``).
_TIME_READERS = {
    "time": {
        "time",
        "time_ns",
        "monotonic",
        "monotonic_ns",
        "perf_counter",
        "perf_counter_ns",
        "process_time",
        "clock_gettime",
        "clock_gettime_ns",
    },
    "datetime": {"now", "utcnow", "today"},
    "date": {"today"},
}


def _time_reads(source: str) -> list[str]:
    """``line: expression`` for every read of the system's time (called or passed on)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            owner = node.value
            name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", None)
            if name in _TIME_READERS and node.attr in _TIME_READERS[name]:
                found.append((node.lineno, f"{name}.{node.attr}"))
        elif isinstance(node, ast.ImportFrom) and node.module == "time":
            found += [
                (node.lineno, f"from time import {alias.name}")
                for alias in node.names
                if alias.name in _TIME_READERS["time"]
            ]
    return [f"{line}: {what}" for line, what in sorted(found)]


def test_only_the_clock_module_reads_the_system_time() -> None:
    """Everything else is handed the one :class:`server.clock.Clock` (tests move it)."""
    offenders = {
        _where(path): reads
        for path in SERVER.rglob("*.py")
        if path != SERVER / "clock.py" and (reads := _time_reads(path.read_text()))
    }
    assert offenders == {}, "take the clock (ClockDep, RelayState.clock, a `clock` argument)"


def test_the_time_rule_sees_every_spelling() -> None:
    source = (
        "import time, datetime as dt\n"
        "from time import monotonic\n"
        "from datetime import datetime, date\n"
        "a = time.time()\n"
        "b = datetime.now(UTC)\n"
        "c = dt.datetime.utcnow()\n"
        "d = date.today()\n"
        "e = field(default_factory=time.perf_counter)\n"
        "f = time.strftime('%H', time.localtime(record.created))\n"
        "g = datetime.fromtimestamp(0, UTC)\n"
    )
    assert _time_reads(source) == [
        "2: from time import monotonic",
        "4: time.time",
        "5: datetime.now",
        "6: datetime.utcnow",
        "7: date.today",
        "8: time.perf_counter",
    ]


def _app_state_uses(source: str) -> list[str]:
    """``line: expression`` for every use of Starlette's ``<x>.state`` bag."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
            if node.value.attr == "state":
                found.append((node.lineno, f".state.{node.attr}"))
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) in {
            "getattr",
            "setattr",
            "hasattr",
            "delattr",
            "vars",
        }:
            target = node.args[0] if node.args else None
            if isinstance(target, ast.Attribute) and target.attr == "state":
                found.append((node.lineno, f"{getattr(node.func, 'id', '')}(.state, ...)"))
    return [f"{line}: {what}" for line, what in sorted(found)]


def test_the_relay_shares_state_only_through_the_typed_container() -> None:
    """``app.state.relay`` (a :class:`server.state.RelayState`) is stored by the app factory
    and read by :func:`server.state.relay_state`; nothing else touches ``app.state``."""
    uses = {
        _where(path): [use.split(": ", 1)[1] for use in found]
        for path in SERVER.rglob("*.py")
        if (found := _app_state_uses(path.read_text()))
    }
    assert uses == {"server/app.py": [".state.relay"], "server/state.py": [".state.relay"]}


def test_the_state_rule_sees_every_spelling() -> None:
    source = (
        "hub = request.app.state.hub\n"
        "app.state.push = None\n"
        "x = getattr(app.state, 'delivery', None)\n"
        "ok = relay_state(app).hub\n"
        "fine = ws.application_state\n"
    )
    assert _app_state_uses(source) == [
        "1: .state.hub",
        "2: .state.push",
        "3: getattr(.state, ...)",
    ]


def test_the_admin_cli_goes_through_services_not_sql() -> None:
    """``vox-relay`` calls the services the REST API calls; it holds no SQL of its own."""
    bad = {
        n
        for n in _imports(SERVER / "cli.py")
        if ".repository" in n
        or n.endswith(".invites")
        or n.startswith("server.accounts.invites")
        or (n.split(".")[0] == "sqlalchemy" and not n.startswith("sqlalchemy.ext.asyncio"))
        or n.startswith("server.db.models")
    }
    assert bad == set()


def test_every_request_dependency_is_a_coroutine() -> None:
    """A plain ``def`` dependency runs in the thread pool: one thread hop per request for
    what is a field lookup. Every dependency of every route must be ``async def``."""
    import importlib
    import inspect

    from fastapi.dependencies.models import Dependant
    from fastapi.routing import APIRoute, APIRouter

    def sync_calls(dependant: Dependant) -> list[str]:
        found = []
        for sub in dependant.dependencies:
            call = sub.call
            # An instance (fastapi.security.HTTPBearer) is called through its __call__.
            target = call if inspect.isroutine(call) else type(call).__call__
            if call is not None and not (
                inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target)
            ):
                found.append(f"{call.__module__}.{getattr(call, '__qualname__', call)}")
            found += sync_calls(sub)
        return found

    offenders: set[str] = set()
    routes = sorted(SERVER.glob("*/routes.py"))
    assert len(routes) > 5
    for path in routes:
        module = importlib.import_module(f"server.{path.parent.name}.routes")
        for route in getattr(module, "router", APIRouter()).routes:
            if isinstance(route, APIRoute):
                offenders.update(sync_calls(route.dependant))
    assert not offenders, sorted(offenders)
