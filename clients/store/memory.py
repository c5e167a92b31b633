"""An in-memory :class:`~clients.store.base.Store` for tests (nothing persisted, nothing sealed)."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

from clients.store import search
from clients.store.models import (
    GONE_PREFIX,
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

__all__ = ["MemoryStore"]


@dataclasses.dataclass
class _State:
    profile: Profile | None = None
    prekeys: dict[tuple[PrekeyKind, int], PrekeyRecord] = dataclasses.field(default_factory=dict)
    prekey_ids: dict[PrekeyKind, int] = dataclasses.field(default_factory=dict)
    sessions: dict[tuple[str, int], bytes] = dataclasses.field(default_factory=dict)
    peers: dict[str, PeerIdentity] = dataclasses.field(default_factory=dict)
    contacts: dict[str, Contact] = dataclasses.field(default_factory=dict)
    groups: dict[str, Group] = dataclasses.field(default_factory=dict)
    own_sender_keys: dict[str, bytes] = dataclasses.field(default_factory=dict)
    sender_keys: dict[tuple[str, str, int], bytes] = dataclasses.field(default_factory=dict)
    messages: dict[str, StoredMessage] = dataclasses.field(default_factory=dict)
    outbox: dict[str, OutboxEntry] = dataclasses.field(default_factory=dict)
    seen: dict[str, float] = dataclasses.field(default_factory=dict)
    settings: dict[str, str] = dataclasses.field(default_factory=dict)
    secrets: dict[str, bytes] = dataclasses.field(default_factory=dict)


class MemoryStore:
    """Dictionaries behind the :class:`~clients.store.base.Store` protocol."""

    def __init__(self) -> None:
        self._s = _State()
        self._depth = 0

    @contextmanager
    def transaction(self, *, sync: bool = True) -> Iterator[None]:
        """Roll every change back if the block raises (``sync``: nothing to write)."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        snapshot = copy.deepcopy(self._s)
        self._depth = 1
        try:
            yield
        except BaseException:
            self._s = snapshot
            raise
        finally:
            self._depth = 0

    def flush(self) -> None:
        """Nothing to write."""

    def synced(self) -> bool:
        """Nothing is ever waiting for a flush."""
        return True

    def close(self) -> None:
        """Nothing to release."""

    # profile
    def load_profile(self) -> Profile | None:
        return self._s.profile

    def save_profile(self, profile: Profile) -> None:
        self._s.profile = profile

    # prekeys
    def put_prekeys(self, records: Iterable[PrekeyRecord]) -> None:
        for r in records:
            self._s.prekeys[(r.kind, r.key_id)] = r
            self._s.prekey_ids[r.kind] = max(self._s.prekey_ids.get(r.kind, 0), r.key_id)

    def get_prekey(self, kind: PrekeyKind, key_id: int) -> PrekeyRecord | None:
        return self._s.prekeys.get((kind, key_id))

    def consume_prekey(self, kind: PrekeyKind, key_id: int) -> PrekeyRecord | None:
        return self._s.prekeys.pop((kind, key_id), None)

    def delete_prekey(self, kind: PrekeyKind, key_id: int) -> None:
        self._s.prekeys.pop((kind, key_id), None)

    def list_prekeys(self, kind: PrekeyKind) -> list[PrekeyRecord]:
        return sorted(
            (r for (k, _), r in self._s.prekeys.items() if k == kind), key=lambda r: r.key_id
        )

    def next_prekey_id(self, kind: PrekeyKind) -> int:
        return self._s.prekey_ids.get(kind, 0) + 1

    # sessions
    def load_session(self, username: str, device_id: int) -> bytes | None:
        return self._s.sessions.get((username, device_id))

    def store_session(self, username: str, device_id: int, state: bytes) -> None:
        self._s.sessions[(username, device_id)] = bytes(state)

    def delete_session(self, username: str, device_id: int) -> None:
        self._s.sessions.pop((username, device_id), None)

    def session_devices(self, username: str) -> list[int]:
        return sorted(d for (u, d) in self._s.sessions if u == username)

    # peers
    def get_peer(self, username: str) -> PeerIdentity | None:
        return self._s.peers.get(username)

    def put_peer(self, peer: PeerIdentity) -> None:
        self._s.peers[peer.username] = peer

    def list_peers(self) -> list[PeerIdentity]:
        return [self._s.peers[u] for u in sorted(self._s.peers)]

    # contacts
    def put_contact(self, contact: Contact) -> None:
        self._s.contacts[contact.username] = contact

    def delete_contact(self, username: str) -> None:
        self._s.contacts.pop(username, None)

    def list_contacts(self) -> list[Contact]:
        return [self._s.contacts[u] for u in sorted(self._s.contacts)]

    # groups
    def put_group(self, group: Group) -> None:
        self._s.groups[group.group_id] = dataclasses.replace(group, members=tuple(group.members))

    def get_group(self, group_id: str) -> Group | None:
        return self._s.groups.get(group_id)

    def list_groups(self) -> list[Group]:
        return sorted(self._s.groups.values(), key=lambda g: (g.name, g.group_id))

    def delete_group(self, group_id: str) -> None:
        self._s.groups.pop(group_id, None)
        self._s.own_sender_keys.pop(group_id, None)
        self.delete_sender_keys(group_id)

    def load_own_sender_key(self, group_id: str) -> bytes | None:
        return self._s.own_sender_keys.get(group_id)

    def store_own_sender_key(self, group_id: str, state: bytes) -> None:
        self._s.own_sender_keys[group_id] = bytes(state)

    def load_sender_key(self, group_id: str, username: str, device_id: int) -> bytes | None:
        return self._s.sender_keys.get((group_id, username, device_id))

    def store_sender_key(self, group_id: str, username: str, device_id: int, state: bytes) -> None:
        self._s.sender_keys[(group_id, username, device_id)] = bytes(state)

    def delete_sender_keys(self, group_id: str, username: str | None = None) -> None:
        for key in [
            k
            for k in self._s.sender_keys
            if k[0] == group_id and (username is None or k[1] == username)
        ]:
            del self._s.sender_keys[key]

    def prune_device_sender_keys(self, username: str, keep: Iterable[int]) -> int:
        kept = set(keep)
        gone = [k for k in self._s.sender_keys if k[1] == username and k[2] not in kept]
        for key in gone:
            del self._s.sender_keys[key]
        return len(gone)

    # messages
    def add_message(self, message: StoredMessage) -> bool:
        if message.message_id in self._s.messages:
            return False
        self._s.messages[message.message_id] = message
        return True

    def add_messages(self, messages: Sequence[StoredMessage]) -> list[bool]:
        return [self.add_message(m) for m in messages]

    def get_message(self, message_id: str) -> StoredMessage | None:
        return self._s.messages.get(message_id)

    def history(
        self, conversation: str, *, limit: int = 100, before: float | None = None
    ) -> list[StoredMessage]:
        rows = [
            m
            for m in self._s.messages.values()
            if m.conversation == conversation and (before is None or m.sent_at < before)
        ]
        rows.sort(key=lambda m: (m.sent_at, m.received_at, m.message_id))
        return rows[-limit:] if limit > 0 else []

    def update_message_state(
        self, message_id: str, state: DeliveryState, *, direction: Direction | None = None
    ) -> bool:
        m = self._s.messages.get(message_id)
        if m is None or state.rank <= m.state.rank:
            return False
        if direction is not None and m.direction is not direction:
            return False
        self._s.messages[message_id] = dataclasses.replace(m, state=state)
        return True

    def update_message_states(
        self,
        message_ids: Iterable[str],
        state: DeliveryState,
        *,
        direction: Direction | None = None,
    ) -> int:
        return sum(self.update_message_state(m, state, direction=direction) for m in message_ids)

    def update_attachment(self, message_id: str, attachment: dict[str, object]) -> bool:
        m = self._s.messages.get(message_id)
        if m is None:
            return False
        self._s.messages[message_id] = dataclasses.replace(m, attachment=dict(attachment))
        return True

    def mark_conversation_read(
        self, conversation: str, *, now: float | None = None
    ) -> list[StoredMessage]:
        changed = []
        for m in self.history(conversation, limit=len(self._s.messages)):
            if m.direction is Direction.IN and m.state is DeliveryState.RECEIVED:
                expire_at = m.expire_at
                if now is not None and m.expires_in and expire_at is None:
                    expire_at = now + m.expires_in
                self._s.messages[m.message_id] = dataclasses.replace(
                    m, state=DeliveryState.READ, expire_at=expire_at
                )
                changed.append(self._s.messages[m.message_id])
        return changed

    def replace_message(self, message: StoredMessage) -> bool:
        if message.message_id not in self._s.messages:
            return False
        self._s.messages[message.message_id] = message
        return True

    def delete_message(self, message_id: str) -> bool:
        return self._s.messages.pop(message_id, None) is not None

    def forget_message(self, message_id: str, at: float) -> bool:
        with self.transaction():
            self.mark_seen(GONE_PREFIX + message_id, at)
            return self.delete_message(message_id)

    def is_gone(self, message_id: str) -> bool:
        return self.is_seen(GONE_PREFIX + message_id)

    def expired_messages(self, now: float) -> list[StoredMessage]:
        return [
            m for m in self._s.messages.values() if m.expire_at is not None and m.expire_at <= now
        ]

    def search_messages(
        self, query: str, *, conversation: str | None = None, limit: int = 50
    ) -> list[StoredMessage]:
        wanted = search.words(query)
        found = [
            m
            for m in self._s.messages.values()
            if (conversation is None or m.conversation == conversation)
            and search.matches(m, wanted)
        ]
        found.sort(key=lambda m: (m.sent_at, m.received_at, m.message_id), reverse=True)
        return found[: max(limit, 0)]

    def conversations(self) -> list[ConversationSummary]:
        out: dict[str, ConversationSummary] = {}
        for m in self._s.messages.values():
            prev = out.get(m.conversation, ConversationSummary(m.conversation, 0.0, 0, 0))
            unread = m.direction is Direction.IN and m.state is DeliveryState.RECEIVED
            out[m.conversation] = ConversationSummary(
                m.conversation,
                max(prev.last_at, m.sent_at),
                prev.unread + unread,
                prev.messages + 1,
            )
        return sorted(out.values(), key=lambda c: (-c.last_at, c.conversation))

    # outbox
    def outbox_put(self, entry: OutboxEntry) -> None:
        self._s.outbox[entry.message_id] = entry

    def outbox_pending(self, *, conversation: str | None = None) -> list[OutboxEntry]:
        entries = [
            e
            for e in self._s.outbox.values()
            if conversation is None or e.conversation == conversation
        ]
        return sorted(entries, key=lambda e: (e.created_at, e.message_id))

    def outbox_attempted(self, message_id: str) -> None:
        e = self._s.outbox.get(message_id)
        if e is not None:
            self._s.outbox[message_id] = dataclasses.replace(e, attempts=e.attempts + 1)

    def outbox_remove(self, message_id: str) -> None:
        self._s.outbox.pop(message_id, None)

    # seen ids
    def mark_seen(self, message_id: str, at: float) -> bool:
        if message_id in self._s.seen:
            return False
        self._s.seen[message_id] = at
        return True

    def mark_seen_many(self, message_ids: Sequence[str], at: float) -> set[str]:
        return {m for m in message_ids if self.mark_seen(m, at)}

    def is_seen(self, message_id: str) -> bool:
        return message_id in self._s.seen

    def prune_seen(self, older_than: float, prefix: str = "") -> int:
        old = [k for k, at in self._s.seen.items() if at < older_than and k.startswith(prefix)]
        for k in old:
            del self._s.seen[k]
        return len(old)

    # settings and secrets
    def get_setting(self, key: str) -> str | None:
        return self._s.settings.get(key)

    def set_setting(self, key: str, value: str | None) -> None:
        if value is None:
            self._s.settings.pop(key, None)
        else:
            self._s.settings[key] = value

    def get_secret(self, key: str) -> bytes | None:
        return self._s.secrets.get(key)

    def set_secret(self, key: str, value: bytes | None) -> None:
        if value is None:
            self._s.secrets.pop(key, None)
        else:
            self._s.secrets[key] = bytes(value)
