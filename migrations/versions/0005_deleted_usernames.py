"""deleted usernames: accounts deleted by their owner or the operator

``deleted_usernames`` keeps a deleted account's name (so that a device-list fetch answers
410 ``account_deleted``) and its confusable skeleton, reserved until ``released_at``
(``username_quarantine_days``).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "deleted_usernames",
        sa.Column("username", sa.String(length=32), nullable=False),
        sa.Column("username_skeleton", sa.String(length=128), nullable=False),
        sa.Column("deleted_at", sa.BigInteger(), nullable=False),
        sa.Column("released_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("username", name=op.f("pk_deleted_usernames")),
    )
    with op.batch_alter_table("deleted_usernames", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_deleted_usernames_username_skeleton"),
            ["username_skeleton"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("deleted_usernames", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deleted_usernames_username_skeleton"))
    op.drop_table("deleted_usernames")
