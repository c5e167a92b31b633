"""auth token ids are never reused on SQLite (AUTOINCREMENT)

A socket remembers the id of the token it authenticated with, and the relay's token re-check
asks whether that id is still alive. Without AUTOINCREMENT, SQLite gives a new row the
largest rowid + 1: a device that logged in again right after its token expired (the login
deletes the device's expired tokens) got the deleted token's id, and a socket still holding
the expired token passed the re-check. PostgreSQL's identity sequences never reuse ids.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    # The table is rebuilt with AUTOINCREMENT; sqlite_sequence starts at the largest id kept.
    with op.batch_alter_table(
        "auth_tokens", recreate="always", table_kwargs={"sqlite_autoincrement": True}
    ):
        pass


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table(
        "auth_tokens", recreate="always", table_kwargs={"sqlite_autoincrement": False}
    ):
        pass
