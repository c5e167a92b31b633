"""queue usage counters (``delivery_queue_usage``, ``delivery_queue_removed``), kept by triggers

The queue limits (depth, bytes, each sender's share) were checked on PostgreSQL by counting
every row of each recipient device's queue in every batch: O(queue depth) per batch, so a
device offline with thousands of queued envelopes slowed every batch that sent to it. The
counts now live in ``delivery_queue_usage`` (device, sending account → rows, bytes), filled
here from the queue and kept exact by statement-level triggers on ``delivery_queue`` (one
call per statement, with the statement's rows as a transition table — never one per row):

* ``INSERT``: the new rows are added to ``delivery_queue_usage`` (an upsert in key order).
  The writer inserts a device's queue rows only while it holds the device's queue lock
  (``server.delivery.repository.QUEUE_LOCK_CLASS``), so these rows are only ever changed by
  the lock's holder.
* ``DELETE`` (acks, the expiry sweep, device and account deletion, any other): the removed
  rows are *appended* to ``delivery_queue_removed`` — no row of the counters is touched, so
  a delete never waits for (or deadlocks with) a writer holding a queue lock. The writer
  folds a device's removals into its counters under the queue lock, before it reads them.
* ``UPDATE`` (nothing does; a migration might): the old rows as removed, the new ones as
  negative removals.
* ``TRUNCATE``: both tables emptied.

The triggers are created before the back-fill, in the same transaction: creating them locks
``delivery_queue`` against writes until the commit, so no row is counted twice or missed even
while other relay nodes run.

SQLite: the tables are created (one schema for both) but stay empty and get no triggers —
the SQLite writer, the only one writing there, keeps the same counts in memory
(``server.delivery.sqlite_cache``).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

_ADD = (
    "INSERT INTO delivery_queue_usage AS u (device_pk, sender_account_id, count, bytes)"
    " SELECT device_pk, sender_account_id, count(*), coalesce(sum(size), 0) FROM {rows}"
    " GROUP BY device_pk, sender_account_id ORDER BY device_pk, sender_account_id"
    " ON CONFLICT (device_pk, sender_account_id) DO UPDATE"
    " SET count = u.count + excluded.count, bytes = u.bytes + excluded.bytes"
)
_REMOVE = (
    "INSERT INTO delivery_queue_removed (device_pk, sender_account_id, count, bytes)"
    " SELECT device_pk, sender_account_id, {sign}count(*), {sign}coalesce(sum(size), 0)"
    " FROM {rows} GROUP BY device_pk, sender_account_id"
)

#: trigger name suffix: (event, REFERENCING clause, body)
_TRIGGERS = {
    "insert": ("INSERT", "NEW TABLE AS new_rows", _ADD.format(rows="new_rows")),
    "delete": ("DELETE", "OLD TABLE AS old_rows", _REMOVE.format(rows="old_rows", sign="")),
    "update": (
        "UPDATE",  # (transition tables cannot go with a column list: the body filters)
        "OLD TABLE AS old_rows NEW TABLE AS new_rows",
        f"{_REMOVE.format(rows='old_rows', sign='')};"
        f" {_REMOVE.format(rows='new_rows', sign='-')}",
    ),
    "truncate": ("TRUNCATE", "", "DELETE FROM delivery_queue_usage; DELETE FROM delivery_queue_removed"),
}


def upgrade() -> None:
    op.create_table(
        "delivery_queue_usage",
        sa.Column("device_pk", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("sender_account_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "device_pk", "sender_account_id", name=op.f("pk_delivery_queue_usage")
        ),
    )
    op.create_table(
        "delivery_queue_removed",
        sa.Column("id", _SEQ, autoincrement=True, nullable=False),
        sa.Column("device_pk", sa.BigInteger(), nullable=False),
        sa.Column("sender_account_id", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_queue_removed")),
    )
    op.create_index(
        "ix_delivery_queue_removed_device", "delivery_queue_removed", ["device_pk"], unique=False
    )
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, (event, referencing, body) in _TRIGGERS.items():
        op.execute(
            f"CREATE FUNCTION delivery_queue_usage_{name}() RETURNS trigger LANGUAGE plpgsql"
            f" AS $$ BEGIN {body}; RETURN NULL; END $$"
        )
        op.execute(
            f"CREATE TRIGGER delivery_queue_usage_{name} AFTER {event} ON delivery_queue"
            f"{f' REFERENCING {referencing}' if referencing else ''} FOR EACH STATEMENT"
            f" EXECUTE FUNCTION delivery_queue_usage_{name}()"
        )
    # After the triggers (their creation holds off every write to the queue until the commit).
    op.execute(_ADD.format(rows="delivery_queue"))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name in _TRIGGERS:
            op.execute(f"DROP TRIGGER delivery_queue_usage_{name} ON delivery_queue")
            op.execute(f"DROP FUNCTION delivery_queue_usage_{name}()")
    op.drop_index("ix_delivery_queue_removed_device", table_name="delivery_queue_removed")
    op.drop_table("delivery_queue_removed")
    op.drop_table("delivery_queue_usage")
