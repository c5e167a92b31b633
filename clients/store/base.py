"""The store's ``typing.Protocol`` interfaces, one per use case, and :class:`Store` (all of them).

Implementations: :class:`clients.store.memory.MemoryStore` (tests) and
:class:`clients.store.sqlite.SqliteStore` (real; secrets encrypted at rest). Both pass the same
contract tests. Every call is synchronous and short; calling it directly from the event loop is
fine. Never ``await`` inside :meth:`Store.transaction`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

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
)

__all__ = [
    "ContactStore",
    "GroupStore",
    "MessageStore",
    "OutboxStore",
    "PeerStore",
    "PrekeyStore",
    "ProfileStore",
    "SeenStore",
    "SessionStore",
    "SettingsStore",
    "Store",
]


class ProfileStore(Protocol):
    def load_profile(self) -> Profile | None:
        """This device's profile, or None before registration."""
        ...

    def save_profile(self, profile: Profile) -> None:
        """Create or replace the profile (e.g. after registration or linking)."""
        ...


class PrekeyStore(Protocol):
    def put_prekeys(self, records: Iterable[PrekeyRecord]) -> None:
        """Insert (or replace) prekey private parts."""
        ...

    def get_prekey(self, kind: PrekeyKind, key_id: int) -> PrekeyRecord | None:
        """A prekey by kind and id, without consuming it."""
        ...

    def consume_prekey(self, kind: PrekeyKind, key_id: int) -> PrekeyRecord | None:
        """Return and delete a (one-time) prekey in one step; None if already gone."""
        ...

    def delete_prekey(self, kind: PrekeyKind, key_id: int) -> None:
        """Forget a prekey (e.g. an expired signed prekey)."""
        ...

    def list_prekeys(self, kind: PrekeyKind) -> list[PrekeyRecord]:
        """All prekeys of a kind, by ascending key id."""
        ...

    def next_prekey_id(self, kind: PrekeyKind) -> int:
        """One more than the highest id ever handed out for ``kind`` (ids are never reused)."""
        ...


class SessionStore(Protocol):
    def load_session(self, username: str, device_id: int) -> bytes | None:
        """Opaque pairwise session state with a peer device, or None."""
        ...

    def store_session(self, username: str, device_id: int, state: bytes) -> None:
        """Create or replace a pairwise session state."""
        ...

    def delete_session(self, username: str, device_id: int) -> None:
        """Forget a session (e.g. a device left the peer's device list)."""
        ...

    def session_devices(self, username: str) -> list[int]:
        """Device ids of ``username`` we hold a session with, ascending."""
        ...


class PeerStore(Protocol):
    def get_peer(self, username: str) -> PeerIdentity | None:
        """What we know of another account, or None if never seen."""
        ...

    def put_peer(self, peer: PeerIdentity) -> None:
        """Create or replace a peer identity (key, trust state, device list)."""
        ...

    def list_peers(self) -> list[PeerIdentity]:
        """All known peers, by username."""
        ...


class ContactStore(Protocol):
    def put_contact(self, contact: Contact) -> None:
        """Create or replace a contact."""
        ...

    def delete_contact(self, username: str) -> None:
        """Remove a contact (history is kept)."""
        ...

    def list_contacts(self) -> list[Contact]:
        """All contacts, by username."""
        ...


class GroupStore(Protocol):
    def put_group(self, group: Group) -> None:
        """Create or replace a group's name and members."""
        ...

    def get_group(self, group_id: str) -> Group | None:
        """A group by id."""
        ...

    def list_groups(self) -> list[Group]:
        """All groups, by name."""
        ...

    def delete_group(self, group_id: str) -> None:
        """Forget a group and every sender key state of it."""
        ...

    def load_own_sender_key(self, group_id: str) -> bytes | None:
        """Our sender key state (opaque) in a group."""
        ...

    def store_own_sender_key(self, group_id: str, state: bytes) -> None:
        """Replace our sender key state in a group (after each send, or a rotation)."""
        ...

    def load_sender_key(self, group_id: str, username: str, device_id: int) -> bytes | None:
        """Another member device's sender key state in a group."""
        ...

    def store_sender_key(self, group_id: str, username: str, device_id: int, state: bytes) -> None:
        """Create or replace another member device's sender key state."""
        ...

    def delete_sender_keys(self, group_id: str, username: str | None = None) -> None:
        """Forget others' sender keys in a group (all, or one member's) — e.g. on rotation."""
        ...

    def prune_device_sender_keys(self, username: str, keep: Iterable[int]) -> int:
        """Forget, in every group, the sender keys of ``username``'s devices not in ``keep``
        (they left the user's signed device list); returns how many were deleted."""
        ...


class MessageStore(Protocol):
    def add_message(self, message: StoredMessage) -> bool:
        """Store a message; False (and nothing changes) if its id is already stored."""
        ...

    def add_messages(self, messages: Sequence[StoredMessage]) -> list[bool]:
        """:meth:`add_message` for each of ``messages`` in order, at once (one statement in
        the SQLite store, e.g. for a received burst): whether each was added. An id stored
        already, or given earlier in ``messages``, is not added again."""
        ...

    def get_message(self, message_id: str) -> StoredMessage | None:
        """A message by id."""
        ...

    def history(
        self, conversation: str, *, limit: int = 100, before: float | None = None
    ) -> list[StoredMessage]:
        """The last ``limit`` messages of a conversation (sent before ``before``), oldest first."""
        ...

    def update_message_state(
        self, message_id: str, state: DeliveryState, *, direction: Direction | None = None
    ) -> bool:
        """Advance a message's state; True if it changed (states never move backwards). With
        ``direction``, only a message of that direction (e.g. a receipt: our own ones)."""
        ...

    def update_message_states(
        self,
        message_ids: Iterable[str],
        state: DeliveryState,
        *,
        direction: Direction | None = None,
    ) -> int:
        """:meth:`update_message_state` for each of ``message_ids`` (a receipt's ids) at
        once; returns how many changed."""
        ...

    def update_attachment(self, message_id: str, attachment: dict[str, object]) -> bool:
        """Replace a message's attachment metadata (e.g. add the saved ``path``); False if
        there is no such message."""
        ...

    def mark_conversation_read(
        self, conversation: str, *, now: float | None = None
    ) -> list[StoredMessage]:
        """Mark every unread incoming message read; returns them (to send read receipts).

        With ``now``, a read message with a disappearing timer gets ``expire_at = now +
        expires_in`` (its countdown starts when this device reads it)."""
        ...

    def replace_message(self, message: StoredMessage) -> bool:
        """Rewrite a stored message (text, edits, tombstone, reactions, expiry); False if
        there is no message with its id. The id, conversation and sender never change."""
        ...

    def delete_message(self, message_id: str) -> bool:
        """Remove a message from this device (delete for me, or expiry); False if absent."""
        ...

    def forget_message(self, message_id: str, at: float) -> bool:
        """Remove a message from this device for good (delete for me, disappeared): delete it
        and, in the same transaction, remember its id as the seen id ``gone:<id>`` (pruned
        with the other seen ids), so a copy that arrives again is not stored again. False if
        it was not stored (its id is remembered anyway)."""
        ...

    def is_gone(self, message_id: str) -> bool:
        """Whether the message was removed from this device by :meth:`forget_message`."""
        ...

    def expired_messages(self, now: float) -> list[StoredMessage]:
        """Messages whose ``expire_at`` is at or before ``now`` (for the expiry sweep)."""
        ...

    def search_messages(
        self, query: str, *, conversation: str | None = None, limit: int = 50
    ) -> list[StoredMessage]:
        """Messages (not deleted) whose text or caption contains every word of ``query``
        (whole words, case-insensitive), newest first."""
        ...

    def conversations(self) -> list[ConversationSummary]:
        """One summary per conversation with messages, most recent first."""
        ...


class OutboxStore(Protocol):
    def outbox_put(self, entry: OutboxEntry) -> None:
        """Persist a send before it goes out (replaces an entry with the same id)."""
        ...

    def outbox_pending(self, *, conversation: str | None = None) -> list[OutboxEntry]:
        """Every send not yet accepted by the relay (or only ``conversation``'s), oldest
        first."""
        ...

    def outbox_attempted(self, message_id: str) -> None:
        """Count one more attempt of a pending send."""
        ...

    def outbox_remove(self, message_id: str) -> None:
        """The relay accepted the send: forget it."""
        ...


class SeenStore(Protocol):
    def mark_seen(self, message_id: str, at: float) -> bool:
        """Remember a processed incoming id; False if it was already seen (a duplicate)."""
        ...

    def mark_seen_many(self, message_ids: Sequence[str], at: float) -> set[str]:
        """:meth:`mark_seen` for a burst of ids at once (one statement in the SQLite store):
        returns those that were new. An id given twice is new at most once."""
        ...

    def is_seen(self, message_id: str) -> bool:
        """Whether an incoming id was already processed."""
        ...

    def prune_seen(self, older_than: float, prefix: str = "") -> int:
        """Forget ids starting with ``prefix`` seen before ``older_than``; returns how many."""
        ...


class SettingsStore(Protocol):
    def get_setting(self, key: str) -> str | None:
        """A plain (non-secret) setting, e.g. the cached brand config JSON."""
        ...

    def set_setting(self, key: str, value: str | None) -> None:
        """Set (or with None, delete) a plain setting."""
        ...

    def get_secret(self, key: str) -> bytes | None:
        """A secret value (encrypted at rest), e.g. the bearer token."""
        ...

    def set_secret(self, key: str, value: bytes | None) -> None:
        """Set (or with None, delete) a secret value."""
        ...


class Store(
    ProfileStore,
    PrekeyStore,
    SessionStore,
    PeerStore,
    ContactStore,
    GroupStore,
    MessageStore,
    OutboxStore,
    SeenStore,
    SettingsStore,
    Protocol,
):
    """Everything a client keeps locally."""

    def transaction(self, *, sync: bool = True) -> AbstractContextManager[None]:
        """All calls inside commit together or not at all (nesting joins the outer one).

        E.g. store a decrypted message, advance the session and mark the id seen atomically.
        When the block returns the commit is on disk (it survives a crash and a power loss).
        With ``sync=False`` it returns as soon as the commit survives the process being killed
        (no fsync): call :meth:`flush` (e.g. ``await asyncio.to_thread(store.flush)``) before
        anything that relies on it leaves the device — an ack, a ciphertext, an upload. Many
        such commits then share one fsync, off the event loop. Only the outermost block's
        ``sync`` counts.
        """
        ...

    def flush(self) -> None:
        """Make every transaction committed so far durable (one fsync). Thread-safe: meant to
        run in another thread (``clients.sdk.durable``) while the caller's event loop keeps
        using the store."""
        ...

    def synced(self) -> bool:
        """True if every transaction committed so far is known to be durable already (a
        :meth:`flush` now would have nothing to do); False if unsure."""
        ...

    def close(self) -> None:
        """Release the database and the profile lock. Idempotent."""
        ...
