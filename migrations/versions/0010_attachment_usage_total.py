"""a running total of stored attachment bytes (``attachment_usage``), kept by triggers

Every attachment upload checked the relay-wide quota (``limits.max_attachment_bytes_total``)
with ``SELECT sum(size) FROM attachments``: a read of the whole table, which holds every
attachment for its TTL (30 days by default), per upload. The total now lives in one row,
initialised here from that sum, and triggers on ``attachments`` keep it: every insert adds
the row's size, every delete subtracts it, an update of ``size`` applies the difference —
whatever deletes the row (a delete by its uploader, the expiry sweep, an account's deletion)
and on every relay node, since the change is part of the same transaction.

* SQLite: row triggers (one writer at a time: nothing can interleave).
* PostgreSQL: deferred constraint triggers, so the total's row is updated (and locked) only
  at commit: a transaction never holds that lock while it waits for another one (no new
  deadlock with, say, an account deletion that waits for a device row an upload holds).
  Uploads read the total under the quota's advisory lock after the previous upload
  committed (its triggers ran at that commit), so the check stays exact.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CHANGES = {
    # trigger name suffix: (event, the change of the total)
    "insert": ("INSERT", "NEW.size"),
    "delete": ("DELETE", "-OLD.size"),
    "update": ("UPDATE OF size", "NEW.size - OLD.size"),
}
_UPDATE = "UPDATE attachment_usage SET total_bytes = total_bytes + ({change}) WHERE id = 1"


def upgrade() -> None:
    op.create_table(
        "attachment_usage",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("total_bytes", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_attachment_usage_one_row"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.execute(
        "INSERT INTO attachment_usage (id, total_bytes) "
        "SELECT 1, coalesce(sum(size), 0) FROM attachments"
    )
    postgres = op.get_bind().dialect.name == "postgresql"
    for name, (event, change) in _CHANGES.items():
        update = _UPDATE.format(change=change)
        if not postgres:
            op.execute(
                f"CREATE TRIGGER attachment_usage_{name} AFTER {event} ON attachments "
                f"FOR EACH ROW BEGIN {update}; END"
            )
            continue
        op.execute(
            f"CREATE FUNCTION attachment_usage_{name}() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN {update}; RETURN NULL; END $$"
        )
        op.execute(
            f"CREATE CONSTRAINT TRIGGER attachment_usage_{name} AFTER {event} ON attachments "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
            f"EXECUTE PROCEDURE attachment_usage_{name}()"
        )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for name in _CHANGES:
        if postgres:
            op.execute(f"DROP TRIGGER attachment_usage_{name} ON attachments")
            op.execute(f"DROP FUNCTION attachment_usage_{name}()")
        else:
            op.execute(f"DROP TRIGGER attachment_usage_{name}")
    op.drop_table("attachment_usage")
