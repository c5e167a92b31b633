"""Alembic is the only way the schema changes: migrations and models must agree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from server.db.engine import create_engine
from server.db.migrate import (
    alembic_config,
    all_metadata,
    current_revision,
    head_revision,
    upgrade,
)


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, all_metadata()))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def _check(url: str) -> None:
    engine = create_engine(url)
    try:
        await upgrade(engine)
        assert await current_revision(engine) == head_revision()
        async with engine.connect() as conn:
            diff = await conn.run_sync(_diff)
            tables = await conn.run_sync(_tables)
        assert diff == [], f"models and migrations differ: {diff}"
        expected = set(all_metadata().tables)
        assert expected <= tables
        assert {"accounts", "devices", "one_time_prekeys", "auth_tokens"} <= expected
        await upgrade(engine)  # idempotent
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database: a SQLite file in ``tmp_path``, or an empty PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'vox.sqlite3'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


async def test_migrations_match_models(database_url: str) -> None:
    await _check(database_url)


def _downgrade(connection: Connection, target: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.downgrade(cfg, target)


def _upload_indexes(connection: Connection) -> set[str]:
    return {str(ix["name"]) for ix in inspect(connection).get_indexes("attachment_uploads")}


async def _down_and_up(url: str) -> None:
    """0009 (the index on ``attachment_uploads.attachment_id``) is undone and done again."""
    engine = create_engine(url)
    index = "ix_attachment_uploads_attachment_id"
    try:
        await upgrade(engine)
        async with engine.connect() as conn:
            assert index in await conn.run_sync(_upload_indexes)
            await conn.run_sync(_downgrade, "0008")
            await conn.commit()
        assert await current_revision(engine) == "0008"
        async with engine.connect() as conn:
            assert index not in await conn.run_sync(_upload_indexes)
        await upgrade(engine)
        async with engine.connect() as conn:
            assert index in await conn.run_sync(_upload_indexes)
            assert await conn.run_sync(_diff) == []
    finally:
        await engine.dispose()


async def test_the_attachment_id_index_migrates_down_and_up(database_url: str) -> None:
    await _down_and_up(database_url)


async def _usage_down_and_up(url: str) -> None:
    """0010 (the running total of attachment bytes) starts from the attachments already
    stored, and its downgrade removes the table and its triggers (rows then come and go
    without them)."""
    engine = create_engine(url)
    insert = text(
        "INSERT INTO attachments (id, uploader_device_pk, size, created_at, expires_at) "
        "VALUES (:id, NULL, :size, 0, 1)"
    )
    total = text("SELECT total_bytes FROM attachment_usage")
    try:
        await upgrade(engine)
        async with engine.connect() as conn:
            await conn.run_sync(_downgrade, "0009")
            await conn.commit()
        async with engine.begin() as conn:
            assert "attachment_usage" not in await conn.run_sync(_tables)
            await conn.execute(insert, [{"id": "a", "size": 300}, {"id": "b", "size": 40}])
        await upgrade(engine)
        async with engine.begin() as conn:
            assert await conn.scalar(total) == 340
            await conn.execute(insert, {"id": "c", "size": 5})
            await conn.execute(text("DELETE FROM attachments WHERE id = 'a'"))
        async with engine.connect() as conn:
            assert await conn.scalar(total) == 45
            assert await conn.run_sync(_diff) == []
            await conn.run_sync(_downgrade, "0009")
            await conn.commit()
        async with engine.begin() as conn:
            assert "attachment_usage" not in await conn.run_sync(_tables)
            await conn.execute(text("DELETE FROM attachments"))
            await conn.execute(insert, {"id": "d", "size": 1})
        await upgrade(engine)
        async with engine.connect() as conn:
            assert await conn.scalar(total) == 1
    finally:
        await engine.dispose()


async def test_the_attachment_total_migrates_down_and_up(database_url: str) -> None:
    await _usage_down_and_up(database_url)
