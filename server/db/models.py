"""Core relay rows: accounts, devices, auth challenges and tokens, invites, prekeys.

Times are integer Unix seconds (UTC). Keys are stored exactly as clients send them
(type-prefixed encodings, see ``docs/protocol-relay.md``); secrets the relay hands out
(bearer tokens, challenge nonces, invite tokens) are stored only as SHA-256 digests.

``devices.pk`` is the integer key other tables reference (``device_pk``). Delivery tables
must reference it with ``ondelete="CASCADE"``: removing a device from an account's signed
device list deletes its row, which drops its tokens, prekeys and queued envelopes.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from server.db.base import Base

__all__ = [
    "PREKEY_KIND_MLKEM",
    "PREKEY_KIND_X25519",
    "U64",
    "Account",
    "AuthChallenge",
    "AuthToken",
    "Device",
    "Invite",
    "OneTimePrekey",
    "PrekeyClaim",
]

#: ``one_time_prekeys.kind`` values.
PREKEY_KIND_X25519 = 1
PREKEY_KIND_MLKEM = 2

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets BIGINT.
PK = BigInteger().with_variant(Integer(), "sqlite")

_U64_OFFSET = 2**63


class U64(TypeDecorator[int]):
    """An unsigned 64-bit integer (``0 ..= 2^64 - 1``) in a signed 64-bit column.

    SQLite and PostgreSQL integers are signed 64-bit; a protocol ``u64`` is stored shifted
    by ``-2^63``, which keeps the order, so ``<``/``>`` and ``ORDER BY`` in SQL stay correct
    (comparisons with bound values go through this type). Values outside the range raise
    ``ValueError`` before they reach the database.
    """

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> int | None:
        if value is None:
            return None
        number = int(value)
        if not 0 <= number < 2**64:
            raise ValueError(f"{number} is not a u64")
        return number - _U64_OFFSET

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        return None if value is None else int(value) + _U64_OFFSET


class Account(Base):
    """A username, its account signing key and the latest signed device list."""

    __tablename__ = "accounts"
    __table_args__ = (
        # A unique index, not a constraint: SQLite adds it without rebuilding the table.
        Index("uq_accounts_username_skeleton", "username_skeleton", unique=True),
    )

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(32), unique=True)
    #: The name's confusable skeleton (``server.accounts.usernames.skeleton``): unique, so that no
    #: look-alike of an existing name can be registered. ``NULL`` only for accounts that
    #: already existed as look-alikes when the rule was introduced (migration 0003b).
    username_skeleton: Mapped[str | None] = mapped_column(String(128), default=None)
    account_key: Mapped[bytes] = mapped_column(LargeBinary(33))
    device_list: Mapped[bytes] = mapped_column(LargeBinary)
    #: The signed list's ``u64 list_version``.
    device_list_version: Mapped[int] = mapped_column(U64)
    created_at: Mapped[int] = mapped_column(BigInteger)

    devices: Mapped[list[Device]] = relationship(
        back_populates="account", cascade="all, delete-orphan", passive_deletes=True
    )


class DeletedUsername(Base):
    """A deleted account's username: answered as gone, and reserved until ``released_at``.

    While ``released_at`` is in the future, neither the name nor any name with the same
    confusable skeleton can be registered (``username_quarantine_days``).
    """

    __tablename__ = "deleted_usernames"

    username: Mapped[str] = mapped_column(String(32), primary_key=True)
    username_skeleton: Mapped[str] = mapped_column(String(128), index=True)
    deleted_at: Mapped[int] = mapped_column(BigInteger)
    released_at: Mapped[int] = mapped_column(BigInteger)


class Device(Base):
    """One device on an account's signed list, with its current signed prekeys."""

    __tablename__ = "devices"
    __table_args__ = (UniqueConstraint("account_id", "device_id"),)

    pk: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    device_id: Mapped[int] = mapped_column(BigInteger)
    identity_key: Mapped[bytes] = mapped_column(LargeBinary(33))
    auth_key: Mapped[bytes] = mapped_column(LargeBinary(33))
    created_at: Mapped[int] = mapped_column(BigInteger)
    #: Set by ``vox-relay device revoke``: no new tokens until the device is re-listed.
    revoked_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    signed_prekey_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    signed_prekey: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    signed_prekey_signature: Mapped[bytes | None] = mapped_column(LargeBinary(64), default=None)
    last_resort_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    last_resort_key: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    last_resort_signature: Mapped[bytes | None] = mapped_column(LargeBinary(64), default=None)

    account: Mapped[Account] = relationship(back_populates="devices")


class AuthChallenge(Base):
    """A one-shot login nonce (stored hashed) for one device, valid until ``expires_at``."""

    __tablename__ = "auth_challenges"

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    nonce_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    device_pk: Mapped[int] = mapped_column(ForeignKey("devices.pk", ondelete="CASCADE"), index=True)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    #: Who asked: a short hash of the client address (bounds per requester, never an IP).
    requester: Mapped[str] = mapped_column(String(16), default="", server_default="")


class AuthToken(Base):
    """A bearer token (stored as SHA-256) bound to one device."""

    __tablename__ = "auth_tokens"
    #: Ids are never reused (SQLite: AUTOINCREMENT): a socket's token re-check goes by id.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    device_pk: Mapped[int] = mapped_column(ForeignKey("devices.pk", ondelete="CASCADE"), index=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger, default=None)


class Invite(Base):
    """An invite token (stored as SHA-256) with a use budget and an optional expiry."""

    __tablename__ = "invites"

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    uses_left: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    created_at: Mapped[int] = mapped_column(BigInteger)


class OneTimePrekey(Base):
    """An opaque one-time prekey; claimed (deleted) oldest first, exactly once."""

    __tablename__ = "one_time_prekeys"
    __table_args__ = (
        UniqueConstraint("device_pk", "kind", "key_id"),
        Index("ix_one_time_prekeys_claim", "device_pk", "kind", "id"),
    )

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    device_pk: Mapped[int] = mapped_column(ForeignKey("devices.pk", ondelete="CASCADE"))
    kind: Mapped[int] = mapped_column(SmallInteger)
    key_id: Mapped[int] = mapped_column(BigInteger)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    #: Empty for X25519 one-time keys (unsigned); 64 bytes for ML-KEM ones.
    signature: Mapped[bytes] = mapped_column(LargeBinary(64))


class PrekeyClaim(Base):
    """One bundle claim that handed out one-time prekeys of ``device_pk`` (the target) to the
    device ``requester_pk``, at ``claimed_at`` (Unix seconds). Only the last window's rows are
    kept: they bound how fast one-time prekeys leave a device (``server.prekeys.service``)."""

    __tablename__ = "prekey_claims"
    __table_args__ = (Index("ix_prekey_claims_target", "device_pk", "claimed_at"),)

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    device_pk: Mapped[int] = mapped_column(ForeignKey("devices.pk", ondelete="CASCADE"))
    requester_pk: Mapped[int] = mapped_column(BigInteger)
    claimed_at: Mapped[int] = mapped_column(BigInteger)
