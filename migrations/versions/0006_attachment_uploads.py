"""attachment uploads: resumable uploads in progress (docs/protocol-ws.md §9.1)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "attachment_uploads",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column(
            "device_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("received", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("attachment_id", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_pk"],
            ["devices.pk"],
            name=op.f("fk_attachment_uploads_device_pk_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attachment_uploads")),
    )
    with op.batch_alter_table("attachment_uploads", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_attachment_uploads_device_pk"), ["device_pk"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_attachment_uploads_expires_at"), ["expires_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("attachment_uploads", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_attachment_uploads_expires_at"))
        batch_op.drop_index(batch_op.f("ix_attachment_uploads_device_pk"))
    op.drop_table("attachment_uploads")
