"""``vox-relay``'s operator commands (Typer): migrate, invites, accounts, device revocation,
stats, backup and restore; ``serve`` is :func:`server.cli.serve_command` (Click, so that the
serving process never loads Typer), listed here too.

Every command reads settings like the server does (defaults < ``--config``/``VOX_CONFIG``
TOML < ``VOX_*`` environment < options) and fails with one clear line on stderr and exit
status 1 (2 for usage errors). The operator's commands call the same service functions as
the REST API (``server.accounts.service``, ``server.ops.service``), each in one database
session and with the relay's clock. The entry point is :func:`server.cli.main`.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from server.cli import _fail, _settings
from server.notify import DeviceNotifier
from server.settings import Settings

app = typer.Typer(
    name="vox-relay",
    help="Vox relay: store-and-forward of end-to-end encrypted messages.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
invite_app = typer.Typer(help="Invite tokens (registration policy 'invite').", no_args_is_help=True)
device_app = typer.Typer(help="Operator actions on devices.", no_args_is_help=True)
app.add_typer(invite_app, name="invite")
account_app = typer.Typer(help="Operator actions on accounts.", no_args_is_help=True)
app.add_typer(device_app, name="device")
app.add_typer(account_app, name="account")

T = TypeVar("T")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"vox-relay {version('vox')}")
        raise typer.Exit()


@app.callback()
def _main(
    _version_flag: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Vox relay: store-and-forward of end-to-end encrypted messages."""


ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="TOML settings file (default: $VOX_CONFIG).")
]
DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Data directory (default ./vox-data).")
]
DbOpt = Annotated[
    str | None,
    typer.Option("--database-url", help="sqlite+aiosqlite:///... or postgresql+asyncpg://..."),
]


def _run(coro: Awaitable[T]) -> T:
    from server.errors import DomainError

    async def wrapper() -> T:
        return await coro

    try:
        return asyncio.run(wrapper())
    except DomainError as exc:  # a service refused: its message is the line
        _fail(exc.message)
    except (OSError, ConnectionError) as exc:
        _fail(f"cannot reach the database: {exc}")
    except Exception as exc:
        if exc.__class__.__module__.startswith(("sqlalchemy", "asyncpg", "sqlite3")):
            _fail(f"database error: {exc.__class__.__name__}: {str(exc).splitlines()[0]}")
        raise
    raise AssertionError("unreachable")


async def _with_engine(settings: Settings, fn: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    from server.db.engine import create_engine

    if settings.is_sqlite:
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    engine = create_engine(settings.effective_database_url)
    try:
        return await fn(engine)
    finally:
        await engine.dispose()


async def _in_session(settings: Settings, fn: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run ``fn`` (a call into the services, as a route would make) in one database session."""
    from server.db.engine import session_factory

    async def go(engine: AsyncEngine) -> T:
        async with session_factory(engine)() as session:
            return await fn(session)

    return await _with_engine(settings, go)


@asynccontextmanager
async def _notifier(settings: Settings) -> AsyncIterator[DeviceNotifier]:
    """Every relay node's connections, through Redis when it is configured; else nobody's
    (each node re-checks the tokens of its open sockets and closes revoked ones)."""
    from server.delivery.fanout import Hub
    from server.notify import NullNotifier

    if not settings.redis_url:
        yield NullNotifier()
        return
    hub = Hub(settings.redis_url, settings.redis_prefix)
    await hub.start()
    try:
        yield hub
    finally:
        await hub.stop()


async def _migrate(settings: Settings) -> str | None:
    from server.db.migrate import current_revision, upgrade

    async def go(engine: AsyncEngine) -> str | None:
        await upgrade(engine)
        return await current_revision(engine)

    return await _with_engine(settings, go)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def serve(ctx: typer.Context) -> None:
    """Apply pending migrations, then serve HTTP and WebSocket on HOST:PORT."""
    from server.cli import serve_command

    serve_command.main(ctx.args, prog_name="vox-relay serve")


@app.command()
def migrate(
    data_dir: DataDirOpt = None, database_url: DbOpt = None, config: ConfigOpt = None
) -> None:
    """Apply pending database migrations and print the schema revision."""
    settings = _settings(config, data_dir=data_dir, database_url=database_url)
    revision = _run(_migrate(settings))
    typer.echo(f"database at revision {revision}")


_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: str) -> int:
    """``90s``, ``15m``, ``12h``, ``7d``, ``2w`` → seconds."""
    m = _DURATION.match(value.strip().lower())
    if not m or int(m.group(1)) == 0:
        raise typer.BadParameter("use a positive number with a unit: 30m, 12h, 7d, 2w")
    return int(m.group(1)) * _UNITS[m.group(2)]


@invite_app.command("create")
def invite_create(
    uses: Annotated[int, typer.Option(help="How many registrations it allows.", min=1)] = 1,
    expires: Annotated[
        str | None, typer.Option(help="Lifetime, e.g. 30m, 12h, 7d (default: never).")
    ] = None,
    data_dir: DataDirOpt = None,
    database_url: DbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Create an invite token and print it (only its hash is stored)."""
    from server.accounts.service import create_invite
    from server.clock import Clock

    ttl = parse_duration(expires) if expires else None
    settings = _settings(config, data_dir=data_dir, database_url=database_url)

    async def go(session: AsyncSession) -> str:
        return await create_invite(session, uses=uses, ttl=ttl, now=Clock().now())

    _run(_migrate(settings))
    typer.echo(_run(_in_session(settings, go)))


@device_app.command("revoke")
def device_revoke(
    username: Annotated[str, typer.Argument(help="Account username.")],
    device_id: Annotated[int, typer.Argument(help="Device id on that account.", min=1)],
    data_dir: DataDirOpt = None,
    database_url: DbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Revoke all of a device's tokens and block new logins for it.

    The device stays on the account's signed device list (only the account key can change
    that); it can log in again only after the account publishes a list without it and then
    re-adds it. With Redis configured, its open WebSocket connections are closed on every
    node at once; without Redis they end when they next reconnect.
    """
    from server.accounts.service import RevokedDevice, revoke_device
    from server.clock import Clock

    settings = _settings(config, data_dir=data_dir, database_url=database_url)

    async def go(session: AsyncSession) -> RevokedDevice:
        revoked = await revoke_device(session, username, device_id, now=Clock().now())
        async with _notifier(settings) as notifier:
            await notifier.disconnect(revoked.device_pk, "device revoked by the relay operator")
        return revoked

    _run(_migrate(settings))
    revoked = _run(_in_session(settings, go))
    closed = "; its open connections were told to close" if settings.redis_url else ""
    typer.echo(
        f"revoked device {device_id} of {username}: "
        f"{revoked.tokens_revoked} token(s) revoked{closed}"
    )


@device_app.command("unrevoke")
def device_unrevoke(
    username: Annotated[str, typer.Argument(help="Account username.")],
    device_id: Annotated[int, typer.Argument(help="Device id on that account.", min=1)],
    data_dir: DataDirOpt = None,
    database_url: DbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Undo `device revoke`: the device may log in again (with a fresh challenge).

    Example: vox-relay device unrevoke alice 467399649
    """
    from server.accounts.service import unrevoke_device

    settings = _settings(config, data_dir=data_dir, database_url=database_url)

    async def go(session: AsyncSession) -> bool:
        return await unrevoke_device(session, username, device_id)

    _run(_migrate(settings))
    if not _run(_in_session(settings, go)):
        _fail(f"device {device_id} of {username} is not revoked")
    typer.echo(f"device {device_id} of {username} may log in again")


@account_app.command("delete")
def account_delete(
    username: Annotated[str, typer.Argument(help="Account username.")],
    data_dir: DataDirOpt = None,
    database_url: DbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Delete an account: its devices, queues, prekeys, tokens, push subscriptions and the
    attachments it uploaded. Its name (and look-alikes) stay reserved for
    `username_quarantine_days`; its contacts get 410 account_deleted.

    Example: vox-relay account delete mallory
    """
    from server.accounts.service import DeletedAccount, delete_account, finish_deletion
    from server.attachments.storage import LocalDiskStore
    from server.clock import Clock

    settings = _settings(config, data_dir=data_dir, database_url=database_url)

    async def go(session: AsyncSession) -> DeletedAccount:
        deleted = await delete_account(session, settings, username, now=Clock().now())
        store = LocalDiskStore(settings.data_dir.resolve() / "attachments")
        async with _notifier(settings) as notifier:
            await finish_deletion(deleted, notifier, store)
        return deleted

    _run(_migrate(settings))
    deleted = _run(_in_session(settings, go))
    closed = "; open connections were told to close" if settings.redis_url else ""
    until = _utc(deleted.released_at, "%Y-%m-%d %H:%M UTC")
    typer.echo(
        f"deleted account {username}: {len(deleted.device_pks)} device(s), "
        f"{len(deleted.blob_ids)} attachment(s){closed}; the name is reserved until {until}"
    )


def _utc(timestamp: int, fmt: str) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, UTC).strftime(fmt)


@invite_app.command("list")
def invite_list(
    data_dir: DataDirOpt = None,
    database_url: DbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """List invites (id, uses left, expiry, state); tokens are not stored, so not shown.

    Example: vox-relay invite list
    """
    from server.accounts.service import InviteInfo, list_invites
    from server.clock import Clock

    settings = _settings(config, data_dir=data_dir, database_url=database_url)

    async def go(session: AsyncSession) -> list[InviteInfo]:
        return await list_invites(session, now=Clock().now())

    _run(_migrate(settings))
    invites = _run(_in_session(settings, go))

    def when(ts: int | None) -> str:
        return "never" if ts is None else _utc(ts, "%Y-%m-%dT%H:%MZ")

    typer.echo(f"{'ID':>6}  {'USES LEFT':>9}  {'EXPIRES':<17}  {'CREATED':<17}  STATE")
    for i in invites:
        typer.echo(
            f"{i.id:>6}  {i.uses_left:>9}  {when(i.expires_at):<17}  "
            f"{when(i.created_at):<17}  {i.state}"
        )


@invite_app.command("revoke")
def invite_revoke(
    invite_id: Annotated[int, typer.Argument(help="Invite id from `vox-relay invite list`.")],
    data_dir: DataDirOpt = None,
    database_url: DbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Revoke an invite so that it admits nobody more.

    Example: vox-relay invite revoke 3
    """
    from server.accounts.service import revoke_invite

    settings = _settings(config, data_dir=data_dir, database_url=database_url)

    async def go(session: AsyncSession) -> bool:
        return await revoke_invite(session, invite_id)

    _run(_migrate(settings))
    if not _run(_in_session(settings, go)):
        _fail(f"no invite with id {invite_id}")
    typer.echo(f"revoked invite {invite_id}")


@app.command()
def stats(
    data_dir: DataDirOpt = None,
    database_url: DbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Print accounts, devices, active invites, stored prekeys and queued envelopes (JSON)."""
    from server.clock import Clock
    from server.db.migrate import current_revision
    from server.ops.service import relay_stats

    settings = _settings(config, data_dir=data_dir, database_url=database_url)

    async def go(session: AsyncSession) -> dict[str, int]:
        return await relay_stats(session, now=Clock().now())

    if _run(_with_engine(settings, current_revision)) is None:
        _fail("the database has no relay schema yet (run `vox-relay migrate`)")
    typer.echo(json.dumps(_run(_in_session(settings, go)), sort_keys=True))


@app.command()
def backup(
    dest: Annotated[Path, typer.Argument(help="A new directory to write the backup into.")],
    no_database: Annotated[
        bool,
        typer.Option("--no-database", help="Attachments only (back the database up with pg_dump)."),
    ] = False,
    data_dir: DataDirOpt = None,
    database_url: DbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Back up the database (SQLite online backup or pg_dump) and the attachments."""
    from server.clock import Clock
    from server.ops.backup import backup as run_backup

    settings = _settings(config, data_dir=data_dir, database_url=database_url)
    manifest = _backup_step(
        lambda: run_backup(settings, dest, now=Clock().now(), database=not no_database)
    )
    typer.echo(f"backup written to {dest}: {json.dumps(manifest, sort_keys=True)}")


@app.command()
def restore(
    src: Annotated[Path, typer.Argument(help="A directory written by `vox-relay backup`.")],
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing SQLite database file.")
    ] = False,
    data_dir: DataDirOpt = None,
    database_url: DbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Restore a backup (stop the relay first; `serve` then migrates as usual)."""
    from server.ops.backup import restore as run_restore

    settings = _settings(config, data_dir=data_dir, database_url=database_url)
    manifest = _backup_step(lambda: run_restore(settings, src, force=force))
    typer.echo(f"restored {src}: {json.dumps(manifest, sort_keys=True)}")


def _backup_step(step: Callable[[], dict[str, object]]) -> dict[str, object]:
    """Run a backup or restore; any failure is one line on stderr and exit status 1."""
    from server.ops.backup import BackupError

    try:
        return step()
    except (BackupError, OSError, sqlite3.Error) as exc:
        _fail(str(exc))
