"""``vox-relay``: serve, migrate, invites, accounts, device revocation, stats, backup and restore.

Every command reads settings like the server does (defaults < ``--config``/``VOX_CONFIG``
TOML < ``VOX_*`` environment < options) and fails with one clear line on stderr and exit
status 1 (2 for usage errors). The operator's commands (:mod:`server.ops.cli`, Typer) call
the same service functions as the REST API (``server.accounts.service``,
``server.ops.service``), each in one database session and with the relay's clock.

``vox-relay serve`` is parsed here with Click (which uvicorn loads anyway), so that the
serving process never loads Typer (its own copy of Click inside: about 1.3 MB resident for
the process's lifetime); every other command goes to the Typer app.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
from pydantic import ValidationError

from server.settings import ConfigFileError, Settings, load_settings

__all__ = ["main", "serve_command"]


def _fail(message: str) -> NoReturn:
    """One line on stderr, exit status 1."""
    click.echo(f"vox-relay: error: {message}", err=True)
    raise SystemExit(1)


def _settings(config: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config, **overrides)
    except ConfigFileError as exc:
        _fail(str(exc))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "settings"
        _fail(f"invalid setting {where}: {err['msg']}")
    raise AssertionError("unreachable")


def _migrate_in_child(settings: Settings) -> str:
    """Run ``vox-relay migrate`` in a short-lived child process; return the revision.

    The serving process thus never loads Alembic and Mako (about 12 MB of resident memory
    that would otherwise stay for the process's lifetime).
    """
    import os
    import subprocess

    if settings.is_sqlite:
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    env = dict(os.environ)
    env.pop("VOX_CONFIG", None)  # the parent already validated it; pass what matters
    cmd = [sys.executable, "-m", "server.cli", "migrate"]
    cmd += ["--database-url", settings.effective_database_url]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["migration failed"]
        message = lines[-1].removeprefix("vox-relay: error: ")
        _fail(message)
    return result.stdout.strip().rsplit(" ", 1)[-1]


#: Modules that ``vox-relay serve`` blocks (``sys.modules[name] = None``: importing one raises
#: ``ModuleNotFoundError``) because only an optional import with a fallback would load them:
#:
#: * ``pydantic.v1`` (Pydantic 1's API inside Pydantic 2: about 1.4 MB): FastAPI imports it
#:   only to ask whether a route's response model is a Pydantic 1 class (``except
#:   ImportError: return False``); the relay has none;
#: * ``watchfiles`` (a Rust extension: about 0.6 MB): uvicorn's ``--reload`` supervisor,
#:   imported by ``import uvicorn`` (falls back to polling; the relay never reloads);
#: * ``python_multipart`` and its old name ``multipart``: Starlette's form parser (falls back
#:   to "install python-multipart" if a form is ever parsed; no relay route takes a form).
BLOCKED_MODULES = ("pydantic.v1", "watchfiles", "python_multipart", "multipart")


def _lean_serving_process() -> None:
    """Block :data:`BLOCKED_MODULES` in this process, before uvicorn and the app load.

    ``vox-relay serve`` only (the serving process; ``docs/self-hosting.md``, "Memory"); a
    module already imported is left alone.
    """
    for name in BLOCKED_MODULES:
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]


_PATH = click.Path(path_type=Path)


@click.command(
    "serve",
    help="Apply pending migrations, then serve HTTP and WebSocket on HOST:PORT.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="TCP port."
)
@click.option("--data-dir", type=_PATH, default=None, help="Data directory (default ./vox-data).")
@click.option(
    "--database-url", default=None, help="sqlite+aiosqlite:///... or postgresql+asyncpg://..."
)
@click.option("--redis-url", default=None, help="redis://... for multi-node fan-out.")
@click.option(
    "--config", type=_PATH, default=None, help="TOML settings file (default: $VOX_CONFIG)."
)
def serve_command(
    host: str,
    port: int,
    data_dir: Path | None,
    database_url: str | None,
    redis_url: str | None,
    config: Path | None,
) -> None:
    """``vox-relay serve``."""
    _lean_serving_process()
    import uvicorn

    from server.app import create_app
    from server.edge.serve import serving_gc, uvicorn_config
    from server.logs import configure_logging, log_event
    from server.state import relay_state

    settings = _settings(config, data_dir=data_dir, database_url=database_url, redis_url=redis_url)
    configure_logging(settings.log_level, json_lines=settings.log_json)
    sock = _listen(host, port)
    sockets = [sock]
    if settings.ops_port is not None:  # operator-only: /healthz, /readyz, /metrics
        sockets.append(_listen(settings.ops_host, settings.ops_port))
    revision = _migrate_in_child(settings)
    log_event(
        "relay_starting",
        host=host,
        port=port,
        database="sqlite" if settings.is_sqlite else "postgresql",
        redis=bool(settings.redis_url),
        schema=revision,
        registration=settings.registration.value,
        ops_port=settings.ops_port,
    )
    app = create_app(settings)
    relay_state(app).lifespan_hooks.append(serving_gc)  # last: after every layer has started
    server = uvicorn.Server(uvicorn_config(app, settings, host=host, port=port))
    try:
        server.run(sockets=sockets)
    finally:
        for s in sockets:
            s.close()
    if not server.started:
        raise SystemExit(1)


def _listen(host: str, port: int) -> socket.socket:
    """Bind the listening socket up front, so that a busy port is one clear error line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    return sock


def main() -> None:
    """Console-script entry point: ``serve`` here (no Typer), the rest in the Typer app."""
    try:
        if sys.argv[1:2] == ["serve"]:
            serve_command.main(sys.argv[2:], prog_name="vox-relay serve")
        else:
            from server.ops.cli import app

            app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
