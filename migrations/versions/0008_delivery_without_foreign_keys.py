"""delivery tables without foreign keys; two indexes fewer on delivery_queue

The four foreign keys of ``delivery_sends``, ``delivery_payloads`` and ``delivery_queue``
cost a trigger and a ``FOR KEY SHARE`` row lock per inserted row on PostgreSQL, on every
message; what they cascaded is deleted explicitly now (``server.db.device_rows``, the ack
path, the sweep). ``delivery_queue`` keeps three indexes instead of five: the usage index
is folded into the device index (``device_pk, seq, sender_account_id, size``) and the sweep
finds expired queue rows through their sends (same ``expires_at``).

SQLite rebuilds the three tables; ``delivery_queue``'s AUTOINCREMENT counter is carried over
(a rebuilt table would otherwise start again after its largest ``seq`` kept: an empty queue
would hand out seqs already used).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _queue_counter() -> int | None:
    row = (
        op.get_bind()
        .execute(sa.text("SELECT seq FROM sqlite_sequence WHERE name = 'delivery_queue'"))
        .first()
    )
    return None if row is None else int(row[0])


def _restore_queue_counter(value: int | None) -> None:
    if value is None:
        return
    bind = op.get_bind()
    updated = bind.execute(
        sa.text("UPDATE sqlite_sequence SET seq = max(seq, :v) WHERE name = 'delivery_queue'"),
        {"v": value},
    )
    if not updated.rowcount:
        bind.execute(
            sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES ('delivery_queue', :v)"),
            {"v": value},
        )


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    counter = _queue_counter() if sqlite else None
    # Children first: SQLite drops the old table of each rebuild, and with foreign keys on,
    # dropping a table that another one still references would cascade into it.
    with op.batch_alter_table(
        "delivery_queue", table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.drop_constraint("fk_delivery_queue_device_pk_devices", type_="foreignkey")
        batch_op.drop_constraint(
            "fk_delivery_queue_envelope_id_delivery_payloads", type_="foreignkey"
        )
        batch_op.drop_index("ix_delivery_queue_usage")
        batch_op.drop_index("ix_delivery_queue_expires_at")
        batch_op.drop_index("ix_delivery_queue_device")
        batch_op.create_index(
            "ix_delivery_queue_device", ["device_pk", "seq", "sender_account_id", "size"]
        )
    with op.batch_alter_table("delivery_payloads") as batch_op:
        batch_op.drop_constraint(
            "fk_delivery_payloads_envelope_id_delivery_sends", type_="foreignkey"
        )
    with op.batch_alter_table("delivery_sends") as batch_op:
        batch_op.drop_constraint("fk_delivery_sends_sender_device_pk_devices", type_="foreignkey")
    if sqlite:
        _restore_queue_counter(counter)


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    counter = _queue_counter() if sqlite else None
    with op.batch_alter_table(
        "delivery_queue", table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.drop_index("ix_delivery_queue_device")
        batch_op.create_index("ix_delivery_queue_device", ["device_pk", "seq"])
        batch_op.create_index("ix_delivery_queue_expires_at", ["expires_at"])
        batch_op.create_index("ix_delivery_queue_usage", ["device_pk", "sender_account_id", "size"])
    # Rows the foreign keys would refuse (left by a send that raced a device's deletion).
    op.execute(
        "DELETE FROM delivery_queue WHERE device_pk NOT IN (SELECT pk FROM devices)"
        " OR NOT EXISTS (SELECT 1 FROM delivery_payloads AS p"
        " WHERE p.envelope_id = delivery_queue.envelope_id AND p.idx = delivery_queue.idx)"
    )
    op.execute(
        "DELETE FROM delivery_payloads WHERE envelope_id NOT IN"
        " (SELECT envelope_id FROM delivery_sends)"
    )
    op.execute("DELETE FROM delivery_sends WHERE sender_device_pk NOT IN (SELECT pk FROM devices)")
    with op.batch_alter_table("delivery_sends") as batch_op:
        batch_op.create_foreign_key(
            "fk_delivery_sends_sender_device_pk_devices",
            "devices",
            ["sender_device_pk"],
            ["pk"],
            ondelete="CASCADE",
        )
    with op.batch_alter_table("delivery_payloads") as batch_op:
        batch_op.create_foreign_key(
            "fk_delivery_payloads_envelope_id_delivery_sends",
            "delivery_sends",
            ["envelope_id"],
            ["envelope_id"],
            ondelete="CASCADE",
        )
    with op.batch_alter_table(
        "delivery_queue", table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.create_foreign_key(
            "fk_delivery_queue_device_pk_devices",
            "devices",
            ["device_pk"],
            ["pk"],
            ondelete="CASCADE",
        )
        batch_op.create_foreign_key(
            "fk_delivery_queue_envelope_id_delivery_payloads",
            "delivery_payloads",
            ["envelope_id", "idx"],
            ["envelope_id", "idx"],
            ondelete="CASCADE",
        )
    if sqlite:
        _restore_queue_counter(counter)
