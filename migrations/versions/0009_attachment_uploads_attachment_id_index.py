"""an index on attachment_uploads.attachment_id

``DELETE /v1/attachments/{id}`` deletes the record of the upload that made the attachment
(``device_pk = ? AND attachment_id = ?``), and every upload created sums the bytes reserved
by all unfinished uploads (``attachment_id IS NULL``): without an index on the column the
latter read the whole table and the former every upload of the device. A B-tree answers
both ``=`` and ``IS NULL`` on SQLite and PostgreSQL. The table holds each upload for
``upload_ttl_seconds`` (a day by default), so building the index takes no noticeable time.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_attachment_uploads_attachment_id"


def upgrade() -> None:
    op.create_index(INDEX, "attachment_uploads", ["attachment_id"])


def downgrade() -> None:
    op.drop_index(INDEX, table_name="attachment_uploads")
