"""Alembic environment for the relay.

Two ways in:

* programmatic (the relay, tests): ``server.db.migrate`` passes a live synchronous
  connection in ``config.attributes["connection"]`` (from ``AsyncConnection.run_sync``);
* command line (developers): ``alembic -c migrations/alembic.ini ...`` with
  ``VOX_DATABASE_URL`` (or ``sqlalchemy.url``) set; an async engine is created here.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from server.db.migrate import all_metadata

config = context.config
target_metadata = all_metadata()


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_url(url: str) -> None:
    from server.db.engine import create_engine

    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_run)
            await conn.commit()
    finally:
        await engine.dispose()


def main() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("VOX_DATABASE_URL")
    if not url:
        raise SystemExit("set VOX_DATABASE_URL (or sqlalchemy.url) to run alembic directly")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(_run_with_url(url))


main()
