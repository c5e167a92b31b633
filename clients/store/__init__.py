"""The client's local store: keys, sessions, peers, groups, history — secrets encrypted at rest.

Interfaces are ``typing.Protocol`` classes in :mod:`clients.store.base` (:class:`Store` is all
of them); :class:`MemoryStore` is for tests, :class:`SqliteStore` is the real one::

    store = SqliteStore.open(home, passphrase=None, lock_timeout=5.0)  # or open_store(home)
    try:
        with store.transaction():              # atomic: all or nothing
            store.add_message(message)
            store.store_session(peer, device_id, session.to_bytes())
            store.mark_seen(message.message_id, now)
    finally:
        store.close()                          # releases the profile lock

The scheme (scrypt / key file, AES-256-GCM rows bound to table and row key, profile lock) is
described in ``docs/client-store.md``.
"""

from __future__ import annotations

from pathlib import Path

from clients.store.base import (
    ContactStore,
    GroupStore,
    MessageStore,
    OutboxStore,
    PeerStore,
    PrekeyStore,
    ProfileStore,
    SeenStore,
    SessionStore,
    SettingsStore,
    Store,
)
from clients.store.errors import (
    KeyFileError,
    ProfileLocked,
    StoreCorrupted,
    StoreError,
    WrongPassphrase,
)
from clients.store.memory import MemoryStore
from clients.store.models import (
    Contact,
    ConversationSummary,
    DeliveryState,
    Direction,
    Group,
    OutboxEntry,
    PeerIdentity,
    PrekeyKind,
    PrekeyRecord,
    Profile,
    StoredMessage,
    TrustState,
    group_conversation,
    is_group_conversation,
)
from clients.store.sqlite import SqliteStore, profile_exists

__all__ = [
    "Contact",
    "ContactStore",
    "ConversationSummary",
    "DeliveryState",
    "Direction",
    "Group",
    "GroupStore",
    "KeyFileError",
    "MemoryStore",
    "MessageStore",
    "OutboxEntry",
    "OutboxStore",
    "PeerIdentity",
    "PeerStore",
    "PrekeyKind",
    "PrekeyRecord",
    "PrekeyStore",
    "Profile",
    "ProfileLocked",
    "ProfileStore",
    "SeenStore",
    "SessionStore",
    "SettingsStore",
    "SqliteStore",
    "Store",
    "StoreCorrupted",
    "StoreError",
    "StoredMessage",
    "TrustState",
    "WrongPassphrase",
    "group_conversation",
    "is_group_conversation",
    "open_store",
    "profile_exists",
]


def open_store(
    home: Path | str,
    *,
    passphrase: str | None = None,
    lock_timeout: float = 5.0,
    create: bool = True,
) -> SqliteStore:
    """Open the profile's SQLite store (see :meth:`SqliteStore.open`)."""
    return SqliteStore.open(home, passphrase=passphrase, lock_timeout=lock_timeout, create=create)
