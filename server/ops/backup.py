"""``vox-relay backup`` / ``vox-relay restore``: the database plus the attachment blobs.

A backup is a directory::

    manifest.json     {"format": 1, "database": "sqlite" | "postgresql" | null, "created_at": ...}
    relay.sqlite3     SQLite: a consistent copy made with SQLite's online backup API
                      (safe while the relay runs)
    relay.pgdump      PostgreSQL: ``pg_dump --format=custom`` (consistent, online)
    attachments/      the opaque encrypted blobs of the data directory

Restoring puts them back: SQLite into the configured database file (the relay must be
stopped; an existing file is only replaced with ``force``), PostgreSQL with
``pg_restore --clean --if-exists`` into the configured database. ``vox-relay serve`` then
applies any newer migrations as usual.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

from server.settings import Settings

__all__ = ["BackupError", "backup", "restore"]

FORMAT = 1
MANIFEST = "manifest.json"
SQLITE_FILE = "relay.sqlite3"
PG_FILE = "relay.pgdump"
ATTACHMENTS = "attachments"


class BackupError(Exception):
    """A backup or restore that cannot be done (the message says why and what to do)."""


def _sqlite_path(settings: Settings) -> Path:
    url = settings.effective_database_url
    return Path(url.split(":///", 1)[1])


def _libpq_url(settings: Settings) -> str:
    return settings.effective_database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BackupError(
            f"{name} is not on PATH; install the PostgreSQL client tools matching your "
            "server's version, or back up with the documented commands (docs/self-hosting.md)"
        )
    return path


def _run(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["failed"])[-1]
        raise BackupError(f"{Path(cmd[0]).name}: {last}")


def _attachments_dir(settings: Settings) -> Path:
    return settings.data_dir.resolve() / ATTACHMENTS


def backup(settings: Settings, dest: Path, *, now: int, database: bool = True) -> dict[str, object]:
    """Write a backup of ``settings``' relay into the new directory ``dest``; its manifest."""
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(f"{dest} exists and is not empty; choose a new directory")
    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    kind: str | None = None
    if database and settings.is_sqlite:
        kind = "sqlite"
        source = _sqlite_path(settings)
        if not source.exists():
            raise BackupError(f"no database at {source}")
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        out = sqlite3.connect(dest / SQLITE_FILE)
        try:
            with out:
                src.backup(out)  # the online backup API: consistent while the relay writes
        finally:
            out.close()
            src.close()
    elif database:
        kind = "postgresql"
        target = dest / PG_FILE
        _run([_tool("pg_dump"), "--format=custom", "--no-owner", "--file", str(target),
              "--dbname", _libpq_url(settings)])  # fmt: skip
    blobs = _attachments_dir(settings)
    copied = 0
    if blobs.is_dir():
        shutil.copytree(blobs, dest / ATTACHMENTS)
        copied = sum(1 for p in (dest / ATTACHMENTS).rglob("*") if p.is_file())
    manifest: dict[str, object] = {
        "format": FORMAT,
        "database": kind,
        "attachment_files": copied,
        "created_at": now,
    }
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def restore(settings: Settings, src: Path, *, force: bool = False) -> dict[str, object]:
    """Restore the backup in ``src`` into ``settings``' database and data directory."""
    try:
        manifest = json.loads((src / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise BackupError(f"{src} is not a vox-relay backup (no readable {MANIFEST})") from exc
    if manifest.get("format") != FORMAT:
        raise BackupError(f"unsupported backup format {manifest.get('format')!r}")
    kind = manifest.get("database")
    if kind == "sqlite":
        if not settings.is_sqlite:
            raise BackupError("this is a SQLite backup but the relay is configured for PostgreSQL")
        target = _sqlite_path(settings)
        if target.exists() and not force:
            raise BackupError(f"{target} exists; stop the relay and pass --force to replace it")
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        for suffix in ("-wal", "-shm", "-journal"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        tmp = target.with_name(target.name + ".restoring")
        shutil.copyfile(src / SQLITE_FILE, tmp)
        os.chmod(tmp, 0o600)
        tmp.replace(target)
    elif kind == "postgresql":
        if settings.is_sqlite:
            raise BackupError("this is a PostgreSQL backup but the relay is configured for SQLite")
        _run([_tool("pg_restore"), "--clean", "--if-exists", "--no-owner", "--exit-on-error",
              "--dbname", _libpq_url(settings), str(src / PG_FILE)])  # fmt: skip
    blobs = src / ATTACHMENTS
    if blobs.is_dir():
        target_dir = _attachments_dir(settings)
        target_dir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.copytree(blobs, target_dir, dirs_exist_ok=True)
    return dict(manifest)
