"""Delivery rows: accepted sends, their opaque payloads, per-device queues, attachments.

What the relay keeps about one accepted ``send`` (see ``docs/protocol-ws.md``):

* ``delivery_sends`` — one row per accepted send: the server envelope id, the sending device
  (``sender_device_pk``, plus the sender's username and device id so a ``deliver`` frame needs
  no join), the client's message id (for de-duplication), the server timestamp and the expiry.
  It is kept until the expiry so that a retried send is answered with the same ``accepted``.
* ``delivery_payloads`` — each opaque ciphertext once, however many devices it serves;
  deleted as soon as no queue row references it.
* ``delivery_queue`` — one row per recipient device and payload, ordered by ``seq``, with the
  payload's size and the sending account (for the queue quotas, ``server.delivery.policy``);
  deleted when the device acks it or when it expires.

Nothing else: no plaintext, no recipient list beyond the queue rows, no IP addresses.
Times are integer Unix **milliseconds** (UTC).

No foreign keys on these three tables (migration 0008): each one cost a trigger and a row
lock per inserted row on PostgreSQL, on the relay's hottest path. What they cascaded is
deleted explicitly instead, in the same transactions: a device's rows by
:func:`server.db.device_rows.delete_device_deliveries` (device removal, account deletion),
orphaned payloads with the acks that orphan them, expired rows by the sweep.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.db.base import Base

__all__ = [
    "Attachment",
    "AttachmentUpload",
    "AttachmentUsage",
    "DeliveryPayload",
    "DeliverySend",
    "QueueCounter",
    "QueueEntry",
    "QueueRemoved",
]

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets BIGINT (also the type of
# ``devices.pk`` and so of the columns that hold one).
_SEQ = BigInteger().with_variant(Integer(), "sqlite")


class DeliverySend(Base):
    """One accepted send (its de-duplication record and sender metadata)."""

    __tablename__ = "delivery_sends"
    __table_args__ = (
        UniqueConstraint("sender_device_pk", "client_id"),
        Index("ix_delivery_sends_expires_at", "expires_at"),
    )

    envelope_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    #: ``devices.pk`` (no foreign key). The unique constraint's index serves lookups by
    #: sender device too.
    sender_device_pk: Mapped[int] = mapped_column(_SEQ)
    sender_user: Mapped[str] = mapped_column(String(32))
    sender_device_id: Mapped[int] = mapped_column(BigInteger)
    client_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)


class DeliveryPayload(Base):
    """One opaque ciphertext of a send (``idx`` = its position in the send's payload list)."""

    __tablename__ = "delivery_payloads"

    #: ``delivery_sends.envelope_id`` (no foreign key).
    envelope_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    idx: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class QueueEntry(Base):
    """One payload waiting for one device; ``seq`` orders each device's queue."""

    __tablename__ = "delivery_queue"
    __table_args__ = (
        # A device's queue in seq order (delivery, acks), and it covers the quota query
        # (depth and bytes per device and sending account).
        Index("ix_delivery_queue_device", "device_pk", "seq", "sender_account_id", "size"),
        # A payload's queue rows (is it orphaned? which rows does an expired send leave?).
        # The sweep finds expired rows through their sends (same ``expires_at``): no index
        # on ``expires_at`` here.
        Index("ix_delivery_queue_payload", "envelope_id", "idx"),
        # Never reuse a seq on SQLite (a bare INTEGER PRIMARY KEY may after deletes).
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(_SEQ, primary_key=True, autoincrement=True)
    #: ``devices.pk`` of the recipient (no foreign key).
    device_pk: Mapped[int] = mapped_column(_SEQ)
    #: With ``idx``: the ``delivery_payloads`` row (no foreign key).
    envelope_id: Mapped[str] = mapped_column(String(32))
    idx: Mapped[int] = mapped_column(SmallInteger)
    #: Always its send's ``expires_at``.
    expires_at: Mapped[int] = mapped_column(BigInteger)
    #: Bytes of the payload this row delivers (counted against the device's queue bytes).
    size: Mapped[int] = mapped_column(Integer, server_default="0")
    #: ``accounts.id`` of the sender (for the per-sender share of the queue).
    sender_account_id: Mapped[int] = mapped_column(BigInteger, server_default="0")


class QueueCounter(Base):
    """What one device's queue holds from one sending account: its ``delivery_queue`` rows
    counted and their sizes summed, so that the queue limits read one index range per device
    instead of the whole queue (PostgreSQL; migration 0011).

    Kept exact by statement-level triggers on ``delivery_queue``: every ``INSERT`` adds its
    rows here (the writer inserts a device's rows only while it holds the device's queue lock,
    so no two transactions ever wait for each other on a row of this table). A ``DELETE``
    (acks, the expiry sweep, device and account deletion, anything else) does not touch this
    table: it appends what it removed to :class:`QueueRemoved`, which the writer folds in
    here under the queue lock before it reads a device's usage. Rows whose count reaches 0
    are deleted by that fold.

    SQLite: the tables exist (one schema) but stay empty — the SQLite writer keeps the same
    counts in memory (``server.delivery.sqlite_cache``)."""

    __tablename__ = "delivery_queue_usage"

    #: ``devices.pk`` of the queue's device (no foreign key).
    device_pk: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    sender_account_id: Mapped[int] = mapped_column(
        BigInteger, primary_key=True, autoincrement=False
    )
    count: Mapped[int] = mapped_column(BigInteger)
    bytes: Mapped[int] = mapped_column(BigInteger)


class QueueRemoved(Base):
    """Queue rows deleted and not yet taken off :class:`QueueCounter` (PostgreSQL): one row per
    deleting statement, device and sending account, appended by the ``DELETE`` trigger of
    ``delivery_queue``. Appending never waits for another transaction, so an ack (which does
    not hold the queue lock) cannot deadlock with a writer that holds it."""

    __tablename__ = "delivery_queue_removed"
    __table_args__ = (Index("ix_delivery_queue_removed_device", "device_pk"),)

    id: Mapped[int] = mapped_column(_SEQ, primary_key=True, autoincrement=True)
    device_pk: Mapped[int] = mapped_column(BigInteger)
    sender_account_id: Mapped[int] = mapped_column(BigInteger)
    count: Mapped[int] = mapped_column(BigInteger)
    bytes: Mapped[int] = mapped_column(BigInteger)


class Attachment(Base):
    """An uploaded opaque blob: the bytes live in the attachment store under ``id``."""

    __tablename__ = "attachments"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    uploader_device_pk: Mapped[int | None] = mapped_column(
        ForeignKey("devices.pk", ondelete="SET NULL"), index=True
    )
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)


class AttachmentUsage(Base):
    """The bytes of every row of ``attachments``, in one row (``id`` 1), for the relay-wide
    quota: summing the table instead read all of it per upload. Database triggers keep it
    (migration 0010: every insert and delete of ``attachments``, whoever runs it, changes it
    in the same transaction; on PostgreSQL at commit, so the row is locked only then)."""

    __tablename__ = "attachment_usage"
    __table_args__ = (CheckConstraint("id = 1", name="ck_attachment_usage_one_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    total_bytes: Mapped[int] = mapped_column(BigInteger)


class AttachmentUpload(Base):
    """A resumable upload in progress (``docs/protocol-ws.md`` §9.1): its bytes so far are
    the store's part file ``id``; ``received`` of ``size`` have arrived. Once finished,
    ``attachment_id`` names the attachment it became (kept until ``expires_at`` so that a
    repeated finish gets the same answer). Times are Unix seconds."""

    __tablename__ = "attachment_uploads"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_pk: Mapped[int] = mapped_column(ForeignKey("devices.pk", ondelete="CASCADE"), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    received: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)
    attachment_id: Mapped[str | None] = mapped_column(String(64), index=True)
