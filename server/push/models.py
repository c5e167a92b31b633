"""The ``push_subscriptions`` table: where to send a device's content-free Web Push.

One row per (device, push endpoint). ``p256dh`` and ``auth`` are the subscription's RFC 8291
keys (the user agent's P-256 public key and its 16-byte authentication secret); the relay needs
them to encrypt the fixed "new messages" payload. Rows go with their device (``ON DELETE
CASCADE``) and when the push service answers 404/410. Times are Unix **milliseconds**.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.db.base import Base
from wire.rest import MAX_PUSH_ENDPOINT_LENGTH as MAX_ENDPOINT_LENGTH

__all__ = ["MAX_ENDPOINT_LENGTH", "PushSubscription"]

_PK = BigInteger().with_variant(Integer(), "sqlite")


class PushSubscription(Base):
    """A device's Web Push subscription (RFC 8030 endpoint + RFC 8291 keys)."""

    __tablename__ = "push_subscriptions"
    __table_args__ = (UniqueConstraint("device_pk", "endpoint"),)

    pk: Mapped[int] = mapped_column(_PK, primary_key=True, autoincrement=True)
    #: Public id (128 random bits, hex) used by the REST API.
    id: Mapped[str] = mapped_column(String(32), unique=True)
    device_pk: Mapped[int] = mapped_column(ForeignKey("devices.pk", ondelete="CASCADE"), index=True)
    endpoint: Mapped[str] = mapped_column(String(MAX_ENDPOINT_LENGTH))
    p256dh: Mapped[bytes] = mapped_column(LargeBinary(65))
    auth: Mapped[bytes] = mapped_column(LargeBinary(16))
    created_at: Mapped[int] = mapped_column(BigInteger)
