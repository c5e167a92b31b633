"""Run Alembic migrations programmatically (works from an installed package).

* :func:`upgrade` — ``await upgrade(engine)`` applies every pending migration.
* :func:`current_revision` / :func:`head_revision` — for ``vox-relay stats`` and ``/readyz``.
* :func:`all_metadata` — the metadata of every model module (core + delivery, when present),
  used by ``migrations/env.py`` and the models-vs-migrations test.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["MODEL_MODULES", "alembic_config", "all_metadata", "current_revision", "upgrade"]

#: Every module that defines tables on ``Base.metadata``; missing ones are skipped.
MODEL_MODULES = ("server.db.models", "server.db.models_delivery", "server.push.models")


def all_metadata() -> MetaData:
    """Import every model module that exists and return the shared ``Base.metadata``."""
    from server.db.base import Base

    for name in MODEL_MODULES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)
    return Base.metadata


def alembic_config() -> Config:
    """An Alembic ``Config`` pointing at the installed ``migrations`` package."""
    import migrations

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(next(iter(migrations.__path__)))))
    cfg.set_main_option("path_separator", "os")
    return cfg


def head_revision() -> str | None:
    """The newest revision shipped with this code."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _upgrade_sync(connection: Connection, target: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, target)


async def upgrade(engine: AsyncEngine, target: str = "head") -> None:
    """Apply pending migrations up to ``target`` on ``engine``'s database."""
    async with engine.connect() as conn:
        await conn.run_sync(_upgrade_sync, target)
        await conn.commit()


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at (``None`` before the first migration)."""

    def _read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as conn:
        return await conn.run_sync(_read)
