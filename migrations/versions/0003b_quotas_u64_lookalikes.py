"""quotas, u64 device-list versions, look-alike usernames, prekey claim log

* ``accounts.device_list_version`` holds a protocol u64 shifted by -2^63 (``server.db.models.U64``):
  existing values are shifted; the column stays BIGINT.
* ``accounts.username_skeleton`` (unique): the confusable skeleton of the username
  (``server.accounts.usernames.skeleton``); existing look-alikes keep ``NULL`` (the oldest account
  of a
  skeleton gets it).
* ``delivery_queue.size`` / ``sender_account_id`` (+ covering index): the queue quotas;
  filled in for queued rows from their payloads and send records.
* ``prekey_claims``: the last hour's one-time prekey claims per target device.

Revision ID: 0003b
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from server.accounts.usernames import skeleton

revision: str = "0003b"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    conn = op.get_bind()
    # u64 device-list versions: v is stored as v - 2^63 (order-preserving).
    op.execute(
        "UPDATE accounts SET device_list_version = device_list_version - 9223372036854775807 - 1"
    )

    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("username_skeleton", sa.String(length=128), nullable=True))
    taken: set[str] = set()
    rows = conn.execute(sa.text("SELECT id, username FROM accounts ORDER BY id")).all()
    for account_id, username in rows:
        key = skeleton(username)
        if key in taken:
            continue  # a look-alike registered before the rule: grandfathered (NULL)
        taken.add(key)
        conn.execute(
            sa.text("UPDATE accounts SET username_skeleton = :s WHERE id = :i"),
            {"s": key, "i": account_id},
        )
    # A unique index (SQLite: no table rebuild, which would cascade-delete the devices).
    op.create_index("uq_accounts_username_skeleton", "accounts", ["username_skeleton"], unique=True)

    with op.batch_alter_table("delivery_queue", schema=None) as batch_op:
        batch_op.add_column(sa.Column("size", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(
            sa.Column("sender_account_id", sa.BigInteger(), server_default="0", nullable=False)
        )
    op.execute(
        "UPDATE delivery_queue SET size = COALESCE((SELECT length(p.data) FROM delivery_payloads"
        " AS p WHERE p.envelope_id = delivery_queue.envelope_id AND p.idx = delivery_queue.idx),"
        " 0), sender_account_id = COALESCE((SELECT d.account_id FROM delivery_sends AS s JOIN"
        " devices AS d ON d.pk = s.sender_device_pk WHERE s.envelope_id ="
        " delivery_queue.envelope_id), 0)"
    )
    with op.batch_alter_table("delivery_queue", schema=None) as batch_op:
        batch_op.create_index(
            "ix_delivery_queue_usage", ["device_pk", "sender_account_id", "size"], unique=False
        )

    op.create_table(
        "prekey_claims",
        sa.Column("id", _PK, autoincrement=True, nullable=False),
        sa.Column("device_pk", _PK, nullable=False),
        sa.Column("requester_pk", sa.BigInteger(), nullable=False),
        sa.Column("claimed_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_pk"],
            ["devices.pk"],
            name=op.f("fk_prekey_claims_device_pk_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prekey_claims")),
    )
    with op.batch_alter_table("prekey_claims", schema=None) as batch_op:
        batch_op.create_index("ix_prekey_claims_target", ["device_pk", "claimed_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("prekey_claims", schema=None) as batch_op:
        batch_op.drop_index("ix_prekey_claims_target")
    op.drop_table("prekey_claims")
    with op.batch_alter_table("delivery_queue", schema=None) as batch_op:
        batch_op.drop_index("ix_delivery_queue_usage")
        batch_op.drop_column("sender_account_id")
        batch_op.drop_column("size")
    op.drop_index("uq_accounts_username_skeleton", table_name="accounts")
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_column("username_skeleton")
    # Versions past the signed 64-bit range cannot go back: they are clamped.
    op.execute(
        "UPDATE accounts SET device_list_version = CASE WHEN device_list_version >= 0"
        " THEN 9223372036854775807 ELSE device_list_version + 9223372036854775807 + 1 END"
    )
